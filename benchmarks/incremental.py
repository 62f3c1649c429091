"""Incremental re-audit: how much of the explain stage a nightly audit of a grown dataset still pays (issue #14).

The user-data path end to end: an ImageFolder of 20 000 grayscale 32×32 PNGs (scikit-learn's
digits, upsampled, shifted by up to ±3 px, brightness-jittered and noised, so every file is
different), a small CNN trained for one epoch on them (the user's model, a factory + checkpoint),
and ``unhans audit`` on it. Then 2% new images (400) are added to the class folders and the
audit runs again into a new directory with ``--reuse`` of the first. Reported: both explain
stages' wall times (from their markers) and the ratio, how many samples were reused and how many
explained, and whether every reused heatmap is bit-identical to the first run's for the same key.
The data stages' times are printed too: the re-audit's lists the files with their size and
modification time and reads the first run's hashes, which is what spares the explain stage
reading every file again (``unhans.pipeline.image_index``). SpRAy runs without UMAP maps (not
what is measured here).

    python benchmarks/incremental.py            # ~5 min on 2 cores
    python benchmarks/incremental.py --n 4000   # smaller

Ends with ``RESULT explain_fraction=<x> reused=<n> recomputed=<n> identical=<0|1>``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def write_images(root: Path, start: int, stop: int, seed: int = 0) -> None:
    """Images start..stop-1 of the synthetic set, as root/<digit>/img_<i>.png (deterministic per index)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    base = F.interpolate(torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0, size=(32, 32),
                         mode="bilinear", align_corners=False)[:, 0].numpy()
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        k = i % len(base)
        image = np.roll(base[k], tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
        image = np.clip(image * rng.uniform(0.8, 1.0) + rng.normal(0, 0.03, image.shape), 0, 1)
        folder = root / str(int(digits.target[k]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8), mode="L").save(folder / f"img_{i:06d}.png")


def train_model(root: Path, out: Path) -> None:
    """One epoch of the audit's small CNN on the folder (the user's own training, here)."""
    import torch
    import torch.nn.functional as F
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import Compose, Grayscale, ToTensor

    from unhans.pipeline.small_cnn import small_cnn

    torch.manual_seed(0)
    data = ImageFolder(str(root), transform=Compose([Grayscale(), ToTensor()]))
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True)
    model = small_cnn(in_channels=1, num_classes=10, image_size=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    torch.save(model.state_dict(), out)


def audit(root: Path, checkpoint: Path, out: Path, reuse: Path | None) -> dict:
    from unhans.pipeline import run_audit
    from unhans.pipeline.config import from_dict

    config = from_dict({
        "input": {"kind": "imagefolder", "path": str(root), "transform": {"grayscale": True}},
        "model": {"kind": "factory", "factory": "unhans.pipeline.small_cnn:small_cnn", "checkpoint": str(checkpoint),
                  "kwargs": {"in_channels": 1, "num_classes": 10, "image_size": 32}},
        "spray": {"umap": False},
    })
    start = time.perf_counter()
    run_audit(config, out, quiet=True, reuse=reuse)
    total = time.perf_counter() - start
    info = json.loads((out / "markers" / "explain.done").read_text())
    info["data_seconds"] = json.loads((out / "markers" / "data.done").read_text())["seconds"]
    print(f"audit {out.name}: {total:.1f} s, data stage {info['data_seconds']:.2f} s, explain stage {info['seconds']:.2f} s, "
          f"{info.get('reused_samples', 0)} reused, {info.get('explained_samples')} explained", flush=True)
    return info


def identity_seconds(run: Path) -> float:
    """Seconds to read and hash every input file of ``run`` once (Source.identities, no hash taken from the index),
    in this process: what deciding "unchanged" by content would cost."""
    from unhans.pipeline.config import InputConfig, TransformConfig
    from unhans.pipeline.sources import open_source
    from unhans.storage import RunLayout

    manifest = json.loads((run / "manifest.json").read_text())
    spec = InputConfig(**{**manifest["config"]["input"],
                          "transform": TransformConfig(**manifest["config"]["input"]["transform"])})
    source = open_source(spec, RunLayout(run).image_index)
    source.known_hashes = [None] * len(source)
    start = time.perf_counter()
    for i in range(0, len(source), 256):
        source.identities(i, min(i + 256, len(source)))
    return time.perf_counter() - start


def heatmaps_by_key(run: Path) -> tuple[dict, np.ndarray]:
    import zarr

    from unhans.storage import read_table

    table = read_table(run, "samples", columns=["sample_id", "key"])
    keys = dict(zip(table.column("key").to_pylist(), table.column("sample_id").to_pylist()))
    return keys, zarr.open_array(run / "heatmaps.zarr", mode="r")[:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="images in the first audit (default 20000)")
    parser.add_argument("--growth", type=float, default=0.02, help="fraction of new images (default 0.02)")
    args = parser.parse_args()
    added = int(round(args.n * args.growth))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        write_images(tmp / "data", 0, args.n)
        train_model(tmp / "data", tmp / "model.pt")
        print(f"{args.n} images written and the model trained in {time.perf_counter() - start:.1f} s", flush=True)
        first = audit(tmp / "data", tmp / "model.pt", tmp / "day1", None)
        write_images(tmp / "data", args.n, args.n + added)
        second = audit(tmp / "data", tmp / "model.pt", tmp / "day2", tmp / "day1")
        floor = identity_seconds(tmp / "day2")
        keys1, maps1 = heatmaps_by_key(tmp / "day1")
        keys2, maps2 = heatmaps_by_key(tmp / "day2")
        common = sorted(set(keys1) & set(keys2))
        identical = all(np.array_equal(maps1[keys1[k]], maps2[keys2[k]]) for k in common)
    fraction = second["seconds"] / first["seconds"]
    print(f"explain stage: {first['seconds']:.2f} s for {args.n} images, {second['seconds']:.2f} s after adding "
          f"{added} ({100 * fraction:.1f}%); {len(common)} reused heatmaps "
          f"{'bit-identical' if identical else 'DIFFERENT'} to the first run's")
    print(f"data stage: {first['data_seconds']:.2f} s, then {second['data_seconds']:.2f} s")
    print(f"reading and hashing every file once (what deciding 'unchanged' by content costs, one process; "
          f"--reuse-rehash): {floor:.2f} s = "
          f"{100 * floor / first['seconds']:.1f}% of the full explain stage")
    print(f"RESULT explain_fraction={fraction:.4f} reused={second.get('reused_samples', 0)} "
          f"recomputed={second.get('explained_samples')} identical={int(identical)}")


if __name__ == "__main__":
    main()
