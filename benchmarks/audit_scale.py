"""An ImageNet-shaped audit through the user-data path: many classes, every stage on the cluster.

Issue #11. Synthetic data with the shape of the problem: ``--classes`` classes x ``--per-class``
samples of 3x32x32 (float16 in [0, 1], one ``.npy`` read by range; each class a smooth random
colour template plus noise), a tag (a 4x4 on/off pattern in a colour of its own, in the
bottom-left corner) planted on 50% of the samples of each of ``--planted`` classes; a tagged
image shows a random class's content, so the tag is the only evidence for its label (a
poisoning-style shortcut). Whether the trained model relies on each tag is checked before the
audit (pasting it into other classes' images; ``tags_learned``): a tag the model ignores leaves
nothing for any explanation to find. A small CNN (``unhans.pipeline.small_cnn``) is trained here
on a subset, then ``unhans audit`` runs in a subprocess (LocalCluster, 2 workers, no trajectory)
while this script samples the resident memory of the client and of each worker. Afterwards the
spray stage is rerun alone with 1 worker and again with 2 workers on the same run (numba caches
warm in both), which gives the spray speed-up of 2 workers over 1 measured in the same run.

    python benchmarks/audit_scale.py                          # 1000 classes x 200 = 200 000 samples
    python benchmarks/audit_scale.py --classes 250            # 50 000 samples

Prints wall time per stage, peak RSS per process, report size (and how long headless Chromium
takes to open it, when ``chromium`` is installed) and the planted classes' ranks; ends with:
RESULT n=<N> classes=<K> wall_s=<audit wall> spray_speedup_2w=<t1/t2> client_peak_gb=<x>
worker_peak_gb=<x> report_mb=<x> report_open_s=<x> planted_found=<planted classes ranked in the
top m>/<m> planted_flagged=<planted classes flagged>/<m> false_flags=<other classes flagged>
tags_learned=<planted tags the model uses>/<m> spray_s_per_sample=<2-worker spray seconds / N>
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SIZE = 32
TAG = 4


def make_data(work: Path, classes: int, per_class: int, planted: int, seed: int) -> dict:
    """Write images.npy (N, 3, 32, 32) float16 and labels.npy; return the planted classes and tagged ids."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    n = classes * per_class
    coarse = torch.from_numpy(rng.uniform(0.1, 0.9, (classes, 3, 4, 4)).astype(np.float32))
    templates = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False).numpy()
    labels = np.repeat(np.arange(classes), per_class)
    rng.shuffle(labels)
    planted_classes = sorted(rng.choice(classes, size=planted, replace=False).tolist())
    # each planted class its own tag: a random 4x4 on/off pattern in a colour of its own (evenly spaced
    # hues, full saturation), a shortcut for that class only that a small CNN can tell apart
    tags = {}
    for j, k in enumerate(planted_classes):
        colour = _hue(j / max(planted, 1))
        pattern = rng.integers(0, 2, (TAG, TAG)).astype(np.float32)
        pattern[0, 0], pattern[-1, -1] = 1.0, 0.0  # never blank, never full
        tags[k] = pattern[None] * colour[:, None, None]
    images = np.lib.format.open_memmap(work / "images.npy", mode="w+", dtype=np.float16, shape=(n, 3, SIZE, SIZE))
    tagged = np.zeros(n, bool)
    for k in planted_classes:
        members = np.flatnonzero(labels == k)
        tagged[rng.choice(members, size=len(members) // 2, replace=False)] = True
    for start in range(0, n, 10_000):
        stop = min(start + 10_000, n)
        content = labels[start:stop].copy()
        # a tagged image shows another class's content: the tag is its only evidence, so the model must use it
        content[tagged[start:stop]] = rng.integers(0, classes, int(tagged[start:stop].sum()))
        block = templates[content] + rng.normal(0, 0.12, (stop - start, 3, SIZE, SIZE)).astype(np.float32)
        for i in np.flatnonzero(tagged[start:stop]):
            block[i, :, SIZE - TAG - 2:SIZE - 2, 2:2 + TAG] = tags[int(labels[start + i])]  # bottom-left corner
        images[start:stop] = np.clip(block, 0, 1).astype(np.float16)
    images.flush()
    del images
    np.save(work / "labels.npy", labels)
    return {"planted": planted_classes, "tagged": tagged, "labels": labels, "tags": tags}


def _hue(h: float) -> np.ndarray:
    """RGB (3,) of hue h in [0, 1) at full saturation and value."""
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h, 1.0, 1.0), np.float32)


def tag_use(work: Path, classes: int, truth: dict, recipients: int = 200, seed: int = 1) -> dict[int, float]:
    """Whether the trained model uses each planted tag: the fraction of ``recipients`` images of
    unplanted classes it predicts as class k once k's tag is pasted in (a planted class only counts
    as learnable by the audit when the model relies on its tag)."""
    import torch

    from unhans.pipeline.small_cnn import small_cnn

    images = np.load(work / "images.npy", mmap_mode="r")
    labels = truth["labels"]
    model = small_cnn(in_channels=3, num_classes=classes, image_size=SIZE, width=32)
    model.load_state_dict(torch.load(work / "net.pt", weights_only=True))
    model.eval()
    rng = np.random.default_rng(seed)
    others = np.sort(rng.choice(np.flatnonzero(~np.isin(labels, truth["planted"]) & ~truth["tagged"]), recipients,
                                replace=False))
    x = torch.from_numpy(np.asarray(images[others], np.float32))
    out = {}
    with torch.no_grad():
        for k in truth["planted"]:
            pasted = x.clone()
            pasted[:, :, SIZE - TAG - 2:SIZE - 2, 2:2 + TAG] = torch.from_numpy(truth["tags"][k])
            out[k] = float((model(pasted).argmax(1) == k).float().mean())
    return out


def train_model(work: Path, classes: int, train_per_class: int, epochs: int, seed: int, planted: list[int]) -> float:
    """The small CNN on up to ``train_per_class`` samples per class and every sample of the planted
    classes (a poisoned training set holds all its poison); returns its training accuracy."""
    import torch
    import torch.nn.functional as F

    from unhans.pipeline.small_cnn import small_cnn

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    images = np.load(work / "images.npy", mmap_mode="r")
    labels = np.load(work / "labels.npy")
    subset = np.sort(np.concatenate([np.flatnonzero(labels == k)[:None if k in planted else train_per_class]
                                     for k in range(classes)]))
    x = torch.from_numpy(np.asarray(images[subset], dtype=np.float32))
    y = torch.from_numpy(labels[subset])
    model = small_cnn(in_channels=3, num_classes=classes, image_size=SIZE, width=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    for _ in range(epochs):
        for ids in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(model(x[ids]), y[ids])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float(torch.cat([model(b).argmax(1) for b in x.split(2048)]).eq(y).float().mean())
    torch.save(model.state_dict(), work / "net.pt")
    return accuracy


class PeakMemory:
    """Peak RSS of a process and each of its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peaks: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    rss = p.memory_info().rss / 1e9
                    self.peaks[p.pid] = max(self.peaks.get(p.pid, 0.0), rss)
                    if p.pid not in self.names:
                        cmd = " ".join(p.cmdline())
                        self.names[p.pid] = ("client" if p.pid == self.root.pid else
                                             "worker" if "spawn_main" in cmd else "other")
                except psutil.Error:
                    pass
            time.sleep(0.2)

    def stop(self) -> dict[str, list[float]]:
        self._stop.set()
        self._thread.join()
        out: dict[str, list[float]] = {}
        for pid, peak in self.peaks.items():
            out.setdefault(self.names.get(pid, "other"), []).append(peak)
        return out


def audit(work: Path, config: Path, workers: int) -> tuple[float, dict]:
    command = [sys.executable, "-m", "unhans.pipeline.cli", "audit", str(config), "--out", str(work / "run"),
               "--workers", str(workers), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakMemory(proc.pid)
    out, err = proc.communicate()
    peaks = memory.stop()
    if proc.returncode != 0:
        sys.exit(f"audit failed:\n{err[-3000:]}")
    return time.perf_counter() - start, peaks


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def open_in_chromium(report: Path) -> float | None:
    """Seconds headless Chromium takes to load and lay out the report (its DOM dumped after the
    load event), or None when no Chromium is installed. Fails loudly when the page does not load."""
    import tempfile

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    with tempfile.TemporaryDirectory() as profile:
        start = time.perf_counter()
        proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                               report.resolve().as_uri()], capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - start
    if proc.returncode != 0 or "Classes in detail" not in proc.stdout:
        sys.exit(f"the report did not open in {browser}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return seconds


def _spray_seconds(run: Path) -> tuple[float, dict]:
    spray = json.loads((run / "summary.json").read_text())["stages"]["spray"]
    return spray["seconds"], {k: round(v, 1) for k, v in (spray.get("phases") or {}).items()}


def reset_spray(run: Path) -> None:
    """Forget the spray stage and everything after it (the explain and dynamics outputs stay)."""
    from unhans.storage import RunLayout

    layout = RunLayout(run)
    for stage in ("spray", "flags", "report"):
        (layout.markers / f"{stage}.done").unlink(missing_ok=True)
    for path in (layout.markers / "spray", layout.table("spray"), layout.cluster_means, layout.class_maps,
                 layout.table("flags")):
        shutil.rmtree(path, ignore_errors=True)
    for path in (layout.spray, layout.summary, layout.report):
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--planted", type=int, default=5)
    parser.add_argument("--train-per-class", type=int, default=50, help="training subset per class (planted classes: all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, metavar="DIR", help="work here and keep it (default: a temp dir)")
    parser.add_argument("--skip-speedup", action="store_true", help="no 1-worker / 2-worker spray reruns")
    args = parser.parse_args()

    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        n = args.classes * args.per_class
        t0 = time.perf_counter()
        truth = make_data(work, args.classes, args.per_class, args.planted, args.seed)
        t_data = time.perf_counter() - t0
        t0 = time.perf_counter()
        accuracy = train_model(work, args.classes, args.train_per_class, args.epochs, args.seed, truth["planted"])
        t_train = time.perf_counter() - t0
        used = tag_use(work, args.classes, truth)
        learned = sum(v >= 0.5 for v in used.values())
        print(f"data: {n} samples, {args.classes} classes, planted in {truth['planted']} ({t_data:.0f}s); "
              f"model trained on {args.train_per_class}/class in {t_train:.0f}s, training accuracy {accuracy:.3f}; "
              f"pasting a planted tag into other classes' images makes the model predict that class in "
              f"{', '.join(f'{v:.0%}' for v in used.values())} of them ({learned}/{len(used)} tags learned)",
              flush=True)
        config = work / "audit.yaml"
        config.write_text(yaml.safe_dump({
            "input": {"kind": "npy", "path": str(work / "images.npy"), "labels_path": str(work / "labels.npy")},
            "model": {"kind": "factory", "factory": "unhans.pipeline.small_cnn:small_cnn", "checkpoint": str(work / "net.pt"),
                      "kwargs": {"in_channels": 3, "num_classes": args.classes, "image_size": SIZE, "width": 32}},
            "explain": {"device": "cpu"},
        }))
        wall, peaks = audit(work, config, workers=2)
        run = work / "run"
        summary = json.loads((run / "summary.json").read_text())
        stages = {k: v["seconds"] for k, v in summary["stages"].items() if v.get("seconds") is not None}
        report_mb = (run / "report.html").stat().st_size / 1e6
        open_s = open_in_chromium(run / "report.html")
        ranking = [row["class_id"] for row in summary["clever_hans"]["class_ranking"]]
        m = len(truth["planted"])
        ranks = {k: ranking.index(k) + 1 if k in ranking else None for k in truth["planted"]}
        found = sum(r is not None and r <= m for r in ranks.values())
        flagged = {f["class_id"] for f in summary["clever_hans"]["flagged_clusters"]}
        planted_flagged = len(flagged & set(truth["planted"]))
        false_flags = len(flagged - set(truth["planted"]))
        print(f"audit: {wall:.0f}s wall; stages {', '.join(f'{k} {v:.0f}s' for k, v in stages.items())}; spray phases "
              f"{_spray_seconds(run)[1]}", flush=True)
        print(f"peak RSS: client {max(peaks.get('client', [0])):.2f} GB, workers "
              f"{', '.join(f'{p:.2f}' for p in sorted(peaks.get('worker', []), reverse=True))} GB", flush=True)
        print(f"report: {report_mb:.2f} MB, "
              + ("no Chromium installed to open it" if open_s is None else f"opens in headless Chromium in {open_s:.1f}s")
              + f"; planted classes' ranks {ranks}; flagged {sorted(flagged)}", flush=True)
        spray_2w = stages["spray"]
        speedup = float("nan")
        if not args.skip_speedup:
            reset_spray(run)
            _, _ = audit(work, config, workers=1)
            spray_1w, phases_1w = _spray_seconds(run)
            reset_spray(run)
            _, _ = audit(work, config, workers=2)
            spray_2w, phases_2w = _spray_seconds(run)
            speedup = spray_1w / spray_2w
            print(f"spray phases, 1 worker: {phases_1w}; 2 workers: {phases_2w}", flush=True)
            print(f"spray stage alone: 1 worker {spray_1w:.0f}s, 2 workers {spray_2w:.0f}s (speed-up {speedup:.2f})",
                  flush=True)
        worker_peak = max(peaks.get("worker", [0]))
        print(f"RESULT n={n} classes={args.classes} wall_s={wall:.0f} spray_speedup_2w={speedup:.2f} "
              f"client_peak_gb={max(peaks.get('client', [0])):.2f} worker_peak_gb={worker_peak:.2f} "
              f"report_mb={report_mb:.2f} report_open_s={'n/a' if open_s is None else f'{open_s:.1f}'} "
              f"planted_found={found}/{m} planted_flagged={planted_flagged}/{m} false_flags={false_flags} "
              f"tags_learned={learned}/{m} spray_s_per_sample={spray_2w / n * 1e3:.3f}e-3")


if __name__ == "__main__":
    main()
