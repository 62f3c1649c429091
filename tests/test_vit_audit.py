"""The whole embedded audit on a transformer: `training.architecture: vit` trains the small ViT,
LRP explains it with the AttnLRP rules, and SpRAy and the Clever-Hans search find the tag."""
from __future__ import annotations

import json

from unhans.pipeline import run_audit
from unhans.pipeline.config import from_dict


def test_the_embedded_audit_on_a_small_vit_finds_the_tagged_class(tmp_path):
    config = {"training": {"architecture": "vit"}, "spray": {"umap": False}, "faithfulness": {"samples": 64}}
    summary = run_audit(from_dict(config), tmp_path / "vit", quiet=True)
    manifest = json.loads((tmp_path / "vit" / "manifest.json").read_text())
    assert manifest["model"]["factory"] == "unhans.pipeline.small_vit:small_vit"
    ev = summary["evaluation"]
    assert ev["artifact_class_rank"] == 1
    assert ev["artifact_precision"] >= 0.9 and ev["artifact_recall"] >= 0.9
    # other classes' sub-styles may move the model too (confirmations), but only the tagged class is flagged
    flagged = summary["clever_hans"]["flagged_clusters"]
    assert [f["class_id"] for f in flagged] == [3] and flagged[0]["confirmation"]["confirmed"]
