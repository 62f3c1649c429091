"""Your own data, end to end: the embedded scenario exported as an ImageFolder, a model trained outside unhans.

Issue #10. Per seed (0-4 by default): the embedded digits scenario (tag on 50% of class 3, 10%
symmetric label noise; ``unhans.pipeline.digits``) is written as ``data/train/<label>/<id>.png``
(8-bit grayscale PNGs, labels as the noisy folder names); a user's script trains its own CNN on it
with torchvision's ImageFolder in a plain PyTorch loop, recording ``DynamicsRecorder`` (the README's
three lines); then ``unhans audit --input data/train --model mynet:make_net --checkpoint net.pt``
runs through the user path (a subprocess, a LocalCluster), once with ``--trajectory`` and once
without. Ground truth comes back through the sample keys (file names hold the original index).

Bars (with the trajectory): the poisoned class ranked 1, artifact precision and recall >= 0.9,
mislabel AUROC >= 0.98. Without it: mislabel AUROC >= the AUROC of cleanlab's
``get_label_quality_scores`` on the same model's probabilities (the audit's ``outputs`` table), with
the precision and recall of cleanlab's ``find_label_issues`` printed beside ``mislabel_suspect``'s.
cleanlab is a benchmark-only dependency (``pip install cleanlab``).

    python benchmarks/own_data.py                 # seeds 0-4, about 10 minutes on 2 cores
    python benchmarks/own_data.py --seeds 0       # one seed

Ends with: RESULT passed=<seeds meeting every bar with the trajectory>/5 min_auroc_model_only=<x>
min_margin_vs_cleanlab=<our AUROC minus cleanlab's, worst seed>
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

USER_MODEL = textwrap.dedent("""
    import torch.nn as nn

    def make_net(num_classes=10):
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))
""")

USER_TRAINING = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F, torchvision
    from mynet import make_net
    from unhans.spray.dynamics import DynamicsRecorder

    torch.manual_seed(int(sys.argv[1]))
    torch.set_num_threads(2)
    dataset = torchvision.datasets.ImageFolder("data/train", transform=torchvision.transforms.Compose(
        [torchvision.transforms.Grayscale(), torchvision.transforms.ToTensor()]))
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    y = torch.tensor(dataset.targets)
    model = make_net(num_classes=len(dataset.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    recorder = DynamicsRecorder(num_samples=len(dataset), num_classes=len(dataset.classes), store="dynamics")
    for epoch in range(25):
        for ids in torch.randperm(len(dataset)).split(64):
            logits = model(x[ids])
            loss = F.cross_entropy(logits, y[ids])
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            recorder.update(ids, logits.detach(), y[ids])
        recorder.end_epoch()
    recorder.flush()
    torch.save(model.state_dict(), "net.pt")
""")


def export(root: Path, seed: int):
    """Write the scenario as an ImageFolder; return the training set (ground truth by original index)."""
    from PIL import Image

    from unhans.pipeline.config import DatasetConfig
    from unhans.pipeline.digits import load_digits_dataset

    train = load_digits_dataset(DatasetConfig(seed=seed)).train
    for i, (image, label) in enumerate(zip(train.images, train.labels)):
        folder = root / "data" / "train" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255 + 0.5).astype(np.uint8)).save(folder / f"{i:05d}.png")
    (root / "mynet.py").write_text(USER_MODEL)
    (root / "train.py").write_text(USER_TRAINING)
    return train


def run(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def audit(root: Path, out: str, seed: int, *extra: str) -> float:
    return run([sys.executable, "-m", "unhans.pipeline.cli", "audit", "--input", "data/train", "--grayscale",
                "--model", "mynet:make_net", "--checkpoint", "net.pt", "--num-classes", "10", "--seed", str(seed),
                "--out", out, "--quiet", *extra], root)


def scores(run_dir: Path, train):
    import pyarrow.parquet as pq

    flags = pq.read_table(run_dir / "tables" / "flags").sort_by("sample_id")
    original = np.array([int(Path(k).stem) for k in flags.column("key").to_pylist()])
    return flags, train.tagged[original], train.flipped[original]


def precision_recall(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = int((predicted & truth).sum())
    return hits / max(int(predicted.sum()), 1), hits / max(int(truth.sum()), 1)


def one_seed(seed: int, work: Path) -> dict:
    import pyarrow.parquet as pq
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.metrics import roc_auc_score

    root = work / f"seed{seed}"
    root.mkdir(parents=True)
    train = export(root, seed)
    t_train = run([sys.executable, "train.py", str(seed)], root)
    t_with = audit(root, "runs/with", seed, "--trajectory", "dynamics")
    t_without = audit(root, "runs/model-only", seed)

    summary = json.loads((root / "runs/with/summary.json").read_text())
    ranking = [row["class_name"] for row in summary["clever_hans"]["class_ranking"]]
    flags, tagged, flipped = scores(root / "runs/with", train)
    suspects = flags.column("artifact_suspect").to_numpy(zero_copy_only=False)
    art_p, art_r = precision_recall(suspects, tagged)
    out = {"seed": seed, "rank": ranking.index("3") + 1 if "3" in ranking else None,
           "artifact_precision": art_p, "artifact_recall": art_r,
           "auroc_trajectory": roc_auc_score(flipped, flags.column("mislabel_score").to_numpy()),
           "seconds": {"train": t_train, "audit_with": t_with, "audit_model_only": t_without}}
    out["passed"] = (out["rank"] == 1 and art_p >= 0.9 and art_r >= 0.9 and out["auroc_trajectory"] >= 0.98)

    flags, _, flipped = scores(root / "runs/model-only", train)
    outputs = pq.read_table(root / "runs/model-only/tables/outputs").sort_by("sample_id")
    samples = pq.read_table(root / "runs/model-only/tables/samples").sort_by("sample_id")
    logits = np.asarray(outputs.column("logits").combine_chunks().flatten(), np.float64).reshape(len(flipped), -1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = samples.column("label").to_numpy()
    ours = flags.column("mislabel_score").to_numpy()
    out["auroc_model_only"] = roc_auc_score(flipped, ours)
    out["auroc_cleanlab"] = roc_auc_score(flipped, -get_label_quality_scores(labels, probs))
    out["suspect_precision"], out["suspect_recall"] = precision_recall(
        flags.column("mislabel_suspect").to_numpy(zero_copy_only=False), flipped)
    issues = find_label_issues(labels, probs)
    out["cleanlab_precision"], out["cleanlab_recall"] = precision_recall(issues, flipped)
    out["evidence"] = json.loads((root / "runs/model-only/summary.json").read_text())["mislabel"]["evidence"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args()
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        sys.exit("this benchmark compares against cleanlab: pip install cleanlab")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        rows = []
        for seed in args.seeds:
            row = one_seed(seed, work)
            rows.append(row)
            print(f"seed {seed}: with trajectory rank {row['rank']}, artifact P {row['artifact_precision']:.3f} "
                  f"R {row['artifact_recall']:.3f}, mislabel AUROC {row['auroc_trajectory']:.4f} -> "
                  f"{'pass' if row['passed'] else 'FAIL'} | model only: AUROC {row['auroc_model_only']:.4f} vs "
                  f"cleanlab {row['auroc_cleanlab']:.4f} (margin {row['auroc_model_only'] - row['auroc_cleanlab']:+.4f}); "
                  f"mislabel_suspect P {row['suspect_precision']:.3f} R {row['suspect_recall']:.3f}, "
                  f"find_label_issues P {row['cleanlab_precision']:.3f} R {row['cleanlab_recall']:.3f} | "
                  f"train {row['seconds']['train']:.0f}s, audits {row['seconds']['audit_with']:.0f}s + "
                  f"{row['seconds']['audit_model_only']:.0f}s", flush=True)
    passed = sum(r["passed"] for r in rows)
    worst = min(r["auroc_model_only"] for r in rows)
    margin = min(r["auroc_model_only"] - r["auroc_cleanlab"] for r in rows)
    print(f"RESULT passed={passed}/{len(rows)} min_auroc_model_only={worst:.4f} min_margin_vs_cleanlab={margin:+.4f}")


if __name__ == "__main__":
    main()
