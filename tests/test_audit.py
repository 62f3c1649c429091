"""The whole audit on the embedded default, end to end, with real Dask, Zarr and Parquet."""
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from unhans.pipeline import run_audit
from unhans.pipeline.config import AuditConfig


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    summary = run_audit(AuditConfig(), out, quiet=True)
    return out, summary


def test_the_run_directory_holds_report_summary_zarr_and_parquet(audit):
    out, summary = audit
    assert (out / "report.html").stat().st_size > 10_000
    heatmaps = zarr.open_array(out / "heatmaps.zarr", mode="r")
    assert heatmaps.metadata.zarr_format == 3 and heatmaps.shape == (1257, 1, 32, 32)
    samples = pq.read_table(out / "tables" / "samples")
    assert sorted(samples.column("sample_id").to_pylist()) == list(range(1257))
    flags = pq.read_table(out / "tables" / "flags")
    assert set(flags.column_names) >= {"artifact_score", "artifact_suspect", "mislabel_score", "mislabel_suspect"}
    assert json.loads((out / "summary.json").read_text()) == summary
    # every class's SpRAy embeddings and clusterings, for viewers (ViRelAy export)
    from unhans.storage.class_embeddings import read_class_embedding

    spray_table = pq.read_table(out / "tables" / "spray").to_pydict()
    for class_id in range(10):
        emb = read_class_embedding(out, class_id)
        members = sorted(i for i, c in zip(spray_table["sample_id"], spray_table["class_id"]) if c == class_id)
        assert emb["sample_id"].tolist() == members
        assert emb["spectral"].shape == (len(members), 9) and emb["umap"].shape == (len(members), 2)
        assert {f"k{k}" for k in range(2, 9)} <= set(emb) and np.isfinite(emb["spectral"]).all()
    # wall time of every stage before flags, for nightly comparisons
    assert set(summary["stages"]) == {"data", "train", "explain", "faithfulness", "dynamics", "spray"}
    assert all(stage["seconds"] > 0 for stage in summary["stages"].values())
    explain = summary["stages"]["explain"]
    assert explain["samples_per_second"] == pytest.approx(1257 / explain["seconds"], rel=1e-2)


def test_lrp_heatmaps_conserve_the_explained_logit(audit):
    out, _ = audit
    samples = pq.read_table(out / "tables" / "samples").to_pydict()
    ratio = np.asarray(samples["conservation"])
    # biases absorb some relevance; the bulk must still arrive at the input
    assert np.median(ratio) > 0.8 and np.all(np.isfinite(ratio))
    assert all(status == "ok" for status in samples["status"])


def test_the_audit_checks_its_own_heatmaps_and_trusts_lrp_on_the_digits(audit):
    out, summary = audit
    check = summary["faithfulness"]
    assert check["samples"] == 256 and check["method"] == "lrp"
    assert check["trustworthy"] is True and check["warnings"] == []
    # LRP removes the evidence faster than a random ordering, and its heatmaps change with the weights
    assert check["advantage_over_random"]["ci95"][0] > 0
    assert check["randomization"]["final"] < check["randomization"]["limit"]
    assert len(check["mean_curves"]["logit"]["explainer_morf"]) == len(check["removed"]) == 9
    report = (out / "report.html").read_text()
    assert "Can the audit trust its heatmaps?" in report and "failed a sanity check" not in report


def test_default_config_finds_the_tag_and_the_flipped_labels(audit):
    _, summary = audit
    ev = summary["evaluation"]
    assert set(ev) == {"artifact_class_rank", "artifact_class_ranks", "artifact_precision", "artifact_recall",
                       "artifact_score_auroc", "artifact_score_ap", "artifact_use", "mislabel_auroc",
                       "mislabel_precision_at_n"}
    assert ev["artifact_class_ranks"] == [1]
    # the model takes the shortcut: pasting the tag into other classes' images turns some into 3s (0.115 here)
    assert len(ev["artifact_use"]) == 1 and ev["artifact_use"][0] > 0.03
    assert ev["artifact_class_rank"] == 1
    assert ev["artifact_precision"] >= 0.9 and ev["artifact_recall"] >= 0.9
    assert ev["mislabel_auroc"] >= 0.98


def test_the_recurring_search_runs_where_the_screen_points_and_the_tag_is_still_flagged(audit, tmp_path):
    """With ``spray.recurring_classes: 2`` of the 10 classes, the search runs on 2, the tag's class among them
    (the default runs it on every class: there are no more than 32); the explanations come from the
    fixture's run (``reuse``), so only the later stages run again."""
    from unhans.pipeline.config import from_dict, to_dict

    out, summary = audit
    default = json.loads((out / "spray.json").read_text())["classes"]
    assert all(c["recurring_searched"] for c in default)
    config = to_dict(AuditConfig())
    config["spray"]["recurring_classes"] = 2
    screened = run_audit(from_dict(config), tmp_path / "screened", quiet=True, reuse=out)
    classes = json.loads((tmp_path / "screened" / "spray.json").read_text())["classes"]
    searched = [c["class_id"] for c in classes if c["recurring_searched"]]
    assert len(searched) == 2 and 3 in searched
    assert screened["clever_hans"]["flagged_clusters"][0]["class_id"] == 3


def test_the_flagged_tag_has_a_distinct_concept_in_the_latent_profile_of_the_middle_convolution(audit):
    out, summary = audit
    latent = pq.read_table(out / "tables" / "outputs", columns=["latent"]).column("latent")
    assert len(latent) == 1257 and len(latent[0]) == 2 * 32  # max and mean of the 32 channels of conv "3"
    (flagged,) = summary["clever_hans"]["flagged_clusters"]
    concept = flagged["latent_concept"]
    assert concept["distinct"] and concept["member_level"] >= 1.5 * concept["reference_level"]
    assert all(0 <= j < 64 for j in concept["channels"]) and concept["layer"] == "3"
    # conditional heatmaps through the concept's channels: where the concept sits, drawn in the report
    from unhans.storage import read_concept_maps

    maps = read_concept_maps(out, flagged["class_id"])
    assert concept["maps"] == "written" and 0 < len(maps) <= 10
    assert all(m.shape == (32, 32) and np.isfinite(m).all() and m.any() for m in maps.values())
    report = (out / "report.html").read_text()
    assert "Latent concept" in report and "Where the concept sits" in report


def test_report_is_self_contained_and_escapes_user_controlled_text(audit, tmp_path):
    import shutil

    from unhans.pipeline.config import InputConfig
    from unhans.pipeline.report import write_report
    from unhans.pipeline.report.markup import SORT_SCRIPT
    from unhans.pipeline.sources import SampleImages, open_source
    from unhans.storage import RunLayout

    out, _ = audit
    text = (out / "report.html").read_text()
    for fetch in ('src="http', "src='http", 'href="http', "href='http", "url(http", "<script src"):
        assert fetch not in text  # opens offline
    # the one script is the fixed table sorter, nothing user-controlled runs
    assert text.count("<script") == 1 and f"<script>{SORT_SCRIPT}</script>" in text
    hostile = tmp_path / "<script>alert(1)</script>"
    shutil.copytree(out, hostile)
    images = SampleImages(open_source(InputConfig(kind="npy", path=str(RunLayout(hostile).embedded_images))))
    text = write_report(hostile, images).read_text()
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_report_details_top_k_classes_and_lists_every_class(audit, tmp_path):
    import re
    import shutil

    from unhans.pipeline.config import InputConfig
    from unhans.pipeline.report import write_report
    from unhans.pipeline.sources import SampleImages, open_source
    from unhans.storage import RunLayout

    out, summary = audit
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    images = SampleImages(open_source(InputConfig(kind="npy", path=str(RunLayout(copy).embedded_images))))
    full = write_report(copy, images, top_k=10).read_text()
    one = write_report(copy, images, top_k=1).read_text()
    assert len(re.findall(r"<h3 id='class-(\d+)'", full)) == 10
    # top_k=1: the flagged class alone in detail, every class still one overview row
    assert re.findall(r"<h3 id='class-(\d+)'", one) == [str(summary["clever_hans"]["flagged_clusters"][0]["class_id"])]
    rows = one.split("<tbody>")[1].split("</tbody>")[0]
    assert rows.count("<tr") == 10
    assert len(one) < len(full) / 2
    assert "Data map" in one and "class='datamap'" in one  # the embedded run has training dynamics


def test_a_rerun_recomputes_nothing(audit):
    out, summary = audit
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_audit(AuditConfig(), out, quiet=True)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert again == summary and before == after


def test_a_different_config_for_the_same_directory_is_refused(audit):
    out, _ = audit
    from unhans.storage import RunMismatchError

    with pytest.raises(RunMismatchError, match=r"dataset\.seed"):
        run_audit(AuditConfig().with_seed(1), out, quiet=True)


def test_cli_help_imports_no_heavy_library():
    code = ("import sys; from unhans.pipeline.cli import build_parser; build_parser().format_help(); "
            "heavy = {'torch', 'dask', 'distributed', 'zarr', 'umap', 'sklearn'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_rejects_a_bad_config_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  artifact: {colour: red}\n")
    result = subprocess.run([sys.executable, "-m", "unhans.pipeline.cli", "audit", str(bad), "--out", str(tmp_path / "r")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "dataset.artifact.colour" in result.stderr
    assert not (tmp_path / "r").exists()


def test_report_pictures_do_not_grow_with_the_number_of_samples():
    from unhans.pipeline.report.pictures import MAX_MAP_POINTS, density_map_uri, scatter_svg

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(20_000, 2))
    ring = np.zeros(20_000, bool)
    ring[::1000] = True
    svg = scatter_svg(xy, np.zeros(20_000, int), ring=ring)
    assert svg.count("<circle") == MAX_MAP_POINTS
    assert svg.count('stroke="#d00"') == ring.sum()  # the ringed points are always drawn
    small, large = (density_map_uri(rng.random(n), rng.random(n), rng.random(n), extent=(0, 1, 0, 1))
                    for n in (1_000, 1_000_000))
    assert len(large) < 400_000 and len(small) < 400_000
