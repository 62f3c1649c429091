"""``unhans audit`` on a user's multivariate time series: an .npy of (N, features, time) with labels
and a TCN trained in a plain loop; a shortcut planted in one class (a constant spike at a fixed
step of one feature) must be found with its members, with and without Temporal Saliency Rescaling."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

USER_MODEL = textwrap.dedent("""
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out, dilation):
            super().__init__()
            self.pad = nn.ConstantPad1d((2 * dilation, 0), 0.0)
            self.conv = nn.Conv1d(c_in, c_out, 3, dilation=dilation)
            self.relu = nn.ReLU()
            self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

        def forward(self, x):
            return self.relu(self.conv(self.pad(x)) + self.skip(x))

    def make_tcn(features=6, num_classes=4, width=16):
        return nn.Sequential(Block(features, width, 1), Block(width, width, 2), Block(width, width, 4),
                             nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, num_classes))
""")

# Classes 0-2 carry a box (+1) in their own features and steps, class 3 none. Half of class 1 carries no
# box but the spike instead, so the model must use the spike for them.
USER_TRAINING = textwrap.dedent("""
    import numpy as np, torch, torch.nn.functional as F
    from tsnet import make_tcn

    rng = np.random.default_rng(0)
    n, f, t = 800, 6, 32
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 1, (n, f, t)).astype(np.float32)
    spike = (y == 1) & (rng.random(n) < 0.5)
    for c in range(3):
        x[(y == c) & ~spike, 2 * c:2 * c + 2, 8 * c + 4:8 * c + 12] += 1.0
    x[spike, 4, 25] = 6.0
    np.save("series.npy", x); np.save("labels.npy", y); np.save("truth_spike.npy", spike)
    torch.manual_seed(0)
    model = make_tcn()
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(30):
        for ids in torch.randperm(n).split(64):
            loss = F.cross_entropy(model(X[ids]), Y[ids])
            optimizer.zero_grad(); loss.backward(); optimizer.step()
    torch.save(model.state_dict(), "tcn.pt")
""")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    (root / "tsnet.py").write_text(USER_MODEL)
    (root / "train.py").write_text(USER_TRAINING)
    result = subprocess.run([sys.executable, "train.py"], cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return root


def _audit(root, out, *config_lines):
    config = root / f"{out}.yaml"
    config.write_text("\n".join(["input: {kind: npy, path: series.npy, labels_path: labels.npy}",
                                 "model: {factory: 'tsnet:make_tcn', checkpoint: tcn.pt, kwargs: {num_classes: 4}}",
                                 "spray: {umap: false}", *config_lines]) + "\n")
    result = subprocess.run([sys.executable, "-m", "unhans.pipeline.cli", "audit", str(config), "--out", out, "--quiet"],
                            cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return root / out


def _check_found(root, run):
    from sklearn.metrics import roc_auc_score

    spike = np.load(root / "truth_spike.npy")
    summary = json.loads((run / "summary.json").read_text())
    spray = json.loads((run / "spray.json").read_text())
    flagged = sorted({c["class_id"] for c in summary["clever_hans"]["flagged_clusters"]})
    assert flagged == [1], flagged
    assert summary["clever_hans"]["class_ranking"][0]["class_id"] == 1
    flags = pq.read_table(run / "tables" / "flags").to_pandas().sort_values("sample_id")
    suspect = flags["artifact_suspect"].to_numpy().astype(bool)
    precision, recall = (suspect & spike).sum() / max(suspect.sum(), 1), (suspect & spike).sum() / spike.sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert roc_auc_score(spike, flags["artifact_score"].to_numpy()) >= 0.95
    candidate = next(c for c in spray["classes"] if c["class_id"] == 1)["candidate"]
    top, left, bottom, right = candidate["window"]  # in the features x time plane: the spike at (4, 25)
    assert top <= 4 < bottom and left <= 25 < right, candidate["window"]
    heatmaps = __import__("zarr").open_array(str(run / "heatmaps.zarr"), mode="r")
    assert heatmaps.shape == (800, 6, 32)
    return summary


def test_a_spike_shortcut_in_one_class_of_a_multivariate_series_is_found(project):
    run = _audit(project, "plain")
    summary = _check_found(project, run)
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 10  # thumbnails of the F x T planes and their heatmaps
    assert summary["faithfulness"]["trustworthy"] is True


def test_the_same_audit_with_temporal_saliency_rescaling(project):
    run = _audit(project, "tsr", "explain: {tsr: true, tsr_alpha: 0.5}", "faithfulness: {randomization: false}")
    _check_found(project, run)
    config = json.loads((run / "manifest.json").read_text())["config"]["explain"]
    assert config["tsr"] is True
