"""The audit judges its own heatmaps and warns loudly when they cannot be trusted."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from distributed import LocalCluster

from unhans.explainers import registry
from unhans.explainers.explainer_check import CheckSettings, check_explainer, verdict
from unhans.explainers.explanation import Explanation
from unhans.explainers.registry import make_explainer
from unhans.pipeline import run_audit
from unhans.pipeline.config import from_dict
from unhans.pipeline.stages.faithfulness import stratified_subsample

from test_faithfulness_metrics import _digits, _model


class InputAlone:
    """A broken explainer: the 'heatmap' is the input itself, whatever the model."""

    def __init__(self, model, **_options):
        self.model = model

    def __call__(self, x, target):
        return x.detach().clone()

    def explain(self, x, target="predicted"):
        with torch.no_grad():
            logits = self.model(x)
        chosen = logits.argmax(1) if isinstance(target, str) else target
        return Explanation(x.detach().clone(), logits, chosen)


def test_an_explainer_that_shows_the_input_alone_makes_the_audit_warn(tmp_path, monkeypatch, capsys):
    real = registry.explainer_class
    monkeypatch.setattr(registry, "explainer_class", lambda method: InputAlone if method == "lrp" else real(method))
    # workers in this process, so they build the broken explainer too (a real distributed cluster all the same)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        config = from_dict({"training": {"epochs": 5}, "spray": {"umap": False},
                            "faithfulness": {"samples": 128}, "cluster": {"scheduler": cluster.scheduler_address}})
        summary = run_audit(config, tmp_path / "run", quiet=True)
    check = summary["faithfulness"]
    assert check["trustworthy"] is False
    assert check["randomization"]["final"] > 0.99  # the input does not change when the weights do
    assert any("near-identical" in w for w in check["warnings"])
    assert "not trustworthy" in capsys.readouterr().err
    report = (tmp_path / "run" / "report.html").read_text()
    assert "The heatmaps failed a sanity check" in report and "near-identical" in report
    assert json.loads((tmp_path / "run" / "faithfulness.json").read_text())["samples"] == 128


def test_random_heatmaps_are_not_better_than_a_random_ordering():
    model = _model()
    x, y = _digits(128)
    generator = torch.Generator().manual_seed(0)

    def noise(m, xs, ts):
        return torch.rand(xs.shape[0], *xs.shape[2:], generator=generator)

    def gradient(m, xs, ts):
        return make_explainer(m, "gradient")(xs, ts).sum(1)

    settings = CheckSettings(region=2, steps=16)
    summary = verdict([check_explainer(model, noise, gradient, x, y, settings)], "noise", settings)
    assert summary["better_than_random"] is False and summary["trustworthy"] is False
    assert any("no better than a random ordering" in w for w in summary["warnings"])
    lrp = verdict([check_explainer(model, lambda m, xs, ts: make_explainer(m, "lrp")(xs, ts).sum(1), gradient, x, y,
                                   settings)], "lrp", settings)
    assert lrp["better_than_random"] is True and lrp["randomization"]["passed"] is True
    assert lrp["aopc"]["explainer"] > lrp["aopc"]["random"]


def test_the_subsample_keeps_every_class_in_proportion():
    targets = np.repeat(np.arange(4), [100, 50, 30, 20])
    chosen = stratified_subsample(targets, 40, seed=0)
    assert len(chosen) == 40 and len(set(chosen)) == 40
    assert np.bincount(targets[chosen], minlength=4).tolist() == [20, 10, 6, 4]
    assert not np.array_equal(chosen, stratified_subsample(targets, 40, seed=1))
    assert np.array_equal(chosen, stratified_subsample(targets, 40, seed=0))
