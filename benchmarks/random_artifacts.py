"""Clever-Hans detection on artifacts nobody chose: random draws, planted, learned, then audited.

Issue #27. Each draw (``benchmarks/artifact_draws.py``: family, placement, parameters, poisoned class,
fraction 0.2-0.6, label noise on or off, all from its seed) is planted into one of the data sources,
picked by the seed too:

- images: ``digits`` (scikit-learn's bundled digits upsampled to 32x32 as ``unhans.pipeline.digits``
  does, all 1797, one channel) or ``colour`` (10 classes x 180 of ``audit_scale.make_data``'s 3x32x32
  smooth colour templates plus noise, new templates per seed, without its tag);
- series: ``synthetic`` (6-8 features x 64-96 steps, 4-8 classes x 120; each class a mixture of
  sinusoids and AR(1) processes that differs from a shared base in two features, plus noise) and,
  when ``aeon`` is installed (a benchmark-only dependency: ``pip install aeon``; its datasets ship
  in the wheel and load offline; aeon 1.6 pins numba<0.64 and pandas<3.1, so reinstall the project's
  versions after it: the loader works with them), ``japanese_vowels`` (640 series, 12 features
  resampled to 32 steps, 9 classes).

A model is trained on the planted data in a plain seeded loop (images: ``unhans.pipeline.small_cnn``;
series: the dilated TCN of ``benchmarks/time_series_models.py``). The *use test* pastes the artifact
(``draw.apply`` with a fresh generator) into up to 200 inputs of other classes (never tagged or
flipped) and compares the mean p(poisoned class) before and after: a draw is *used* when it rises by
at least 0.05. Image models rarely need an artifact on top of their class's content (seeds 0-11:
1 image draw in 12 used, series 11 in 16); so by default each draw picks (from its seed, even odds)
whether the tagged samples first take the input of a random sample of another class, as
``audit_scale.py`` plants its tags, so the artifact is their only evidence (poisoning; seeds 0-11,
all swapped: 7 image draws in 12 used), or keep their own (a shortcut beside the class's content);
``--content keep|swap`` fixes it. Every draw is then audited by the real
``unhans audit`` in a subprocess through the user path (``audit.yaml --input inputs.npy --labels
labels.npy --model net:make_net --checkpoint net.pt --workers 2``; the YAML only turns the report's
UMAP maps off, as ``artifact_suite.py`` does), from a per-draw directory under ``--work``.

Per used draw: ``flagged`` = the poisoned class flagged (``clever_hans.flagged_clusters``) and ranked
first; artifact precision and recall of ``artifact_suspect`` against the tagged samples; the AUROC of
``artifact_score`` for the tagged samples against the rest of the poisoned class (given labels).
False flags: every flagged class other than the poisoned one, in every draw, and every flagged class
of the clean runs (no artifact).

``--rescore`` reuses the per-draw directories under ``--work``: data, model, heatmaps and the earlier
stages stay; the markers and outputs of ``spray`` and every later stage are removed and the same
command is run again, so only the detector runs (a changed detector config is taken over in the
manifest, never a changed explain or input config). On 2 cores an image draw takes about 7 s to
train, 0.1 s for the use test and 30-35 s to audit (SpRAy about 19 s of it), a series draw 2 + 16 s;
a rescore about 27 s (image) and 11 s (series): the detector is most of the audit.

    python benchmarks/random_artifacts.py --work /tmp/ra                     # 40 image, 20 series, 20 clean
    python benchmarks/random_artifacts.py --work /tmp/ra --rescore           # the detector again, same draws
    python benchmarks/random_artifacts.py --image-draws 2 --series-draws 1 --clean 1 --only-families glyph,burst
    python benchmarks/random_artifacts.py --content swap --work /tmp/ra-swap   # poisoning-style planting only

Prints one line per draw, a per-family table, and ends with: RESULT used=<used>/<draws>
flagged=<used draws whose poisoned class is flagged and ranked 1>/<used> median_precision=<x>
median_recall=<x> median_auroc=<x> false_flags=<flagged classes of clean runs and non-poisoned flagged
classes of every draw>. Every record also goes to ``<work>/records.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))  # the sibling benchmark modules, last: no shadowing

from artifact_draws import ArtifactDraw, FAMILIES, LABEL_NOISE_RATE, draw_artifact, flip_symmetric, plant  # noqa: E402

USE_RISE = 0.05
RECIPIENTS = 200
EPOCHS = {"image": 8, "series": 20}
RUN_KINDS = ("image", "series", "clean-image", "clean-series")
DETECTOR_STAGES = ("spray", "flags", "report")  # fallback when the stage list cannot be imported
AUDIT_CONFIG = "spray: {umap: false}\n"  # the SpRAy maps are only drawn in the report (as benchmarks/artifact_suite.py)
AUDIT_CONFIG_ALL = "spray: {umap: false, confirm: all}\n"  # calibration: every class's candidates checked

IMAGE_NET = textwrap.dedent("""
    from unhans.pipeline.small_cnn import small_cnn

    def make_net(num_classes=10):
        return small_cnn(in_channels={channels}, num_classes=num_classes, image_size={size}, width=16)
""")
SERIES_NET = textwrap.dedent("""
    import sys
    sys.path.append({benchmarks!r})
    from time_series_models import TCN

    def make_net(num_classes=2):
        return TCN(n_features={features}, n_classes=num_classes)
""")

# ------------------------------------------------------------------------------------------ sources


def digits_images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1797 bundled digits in [0, 1], bilinearly upsampled to 32x32 (as ``unhans.pipeline.digits``)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = F.interpolate(torch.from_numpy((raw.images / 16.0)[:, None].astype(np.float32)), size=(32, 32),
                      mode="bilinear", align_corners=False).clamp_(0, 1).numpy()
    return x, raw.target.astype(np.int64)


def colour_images(seed: int, classes: int = 10, per_class: int = 180) -> tuple[np.ndarray, np.ndarray]:
    """``audit_scale.make_data``'s colour templates plus noise (3x32x32 in [0, 1]), nothing planted."""
    from audit_scale import make_data

    with tempfile.TemporaryDirectory() as tmp:
        labels = make_data(Path(tmp), classes, per_class, planted=0, seed=seed)["labels"]
        return np.load(Path(tmp) / "images.npy").astype(np.float32), labels.astype(np.int64)


def synthetic_series(seed: int, per_class: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """(N, F, T) float32, z-scored per feature: per feature a sinusoid (random phase, amplitude jitter)
    plus an AR(1) process plus white noise; the classes share a base and differ in two features'
    frequency, amplitude or AR coefficient."""
    rng = np.random.default_rng([seed, 31])
    features, length, classes = int(rng.integers(6, 9)), int(rng.integers(64, 97)), int(rng.integers(4, 9))
    base = np.stack([rng.uniform(1 / 40, 1 / 6, features), rng.uniform(0.3, 1.0, features),
                     rng.uniform(0.2, 0.9, features)])  # (3: frequency, amplitude, AR coefficient, F)
    spec = np.repeat(base[None], classes, 0)
    for k in range(classes):
        for f in rng.choice(features, 2, replace=False):
            which = rng.integers(3)
            spec[k, which, f] = base[which, f] * rng.choice([0.6, 1.6]) if which < 2 else rng.uniform(-0.5, 0.95)
    y = rng.permutation(np.repeat(np.arange(classes), per_class))
    freq, amp, ar = (spec[y, i][:, :, None] for i in range(3))  # each (N, F, 1)
    steps = np.arange(length)[None, None]
    x = amp * rng.uniform(0.7, 1.3, amp.shape) * np.sin(2 * np.pi * (freq * steps + rng.uniform(0, 1, amp.shape)))
    state = np.zeros(amp.shape[:2])
    for t in range(length):
        state = ar[:, :, 0] * state + rng.normal(0, 0.5, state.shape)
        x[:, :, t] += state
    x += rng.normal(0, 0.3, x.shape)
    x = (x - x.mean((0, 2), keepdims=True)) / x.std((0, 2), keepdims=True)
    return x.astype(np.float32), y.astype(np.int64)


def japanese_vowels(seed: int, length: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """aeon's bundled JapaneseVowels (train + test: 640 series of 12 features, 7-29 steps), each
    linearly resampled to ``length`` steps, z-scored per feature."""
    from aeon.datasets import load_japanese_vowels

    series, labels = load_japanese_vowels()
    grid = np.linspace(0, 1, length)
    x = np.stack([[np.interp(grid, np.linspace(0, 1, s.shape[1]), row) for row in s] for s in series])
    x = (x - x.mean((0, 2), keepdims=True)) / x.std((0, 2), keepdims=True)
    return x.astype(np.float32), np.unique(labels, return_inverse=True)[1].astype(np.int64)


def aeon_available() -> bool:
    try:
        import aeon.datasets  # noqa: F401
    except ImportError:
        return False
    return True


def sources(kind: str) -> dict:
    if kind == "image":
        return {"digits": digits_images, "colour": colour_images}
    return {"synthetic": synthetic_series, **({"japanese_vowels": japanese_vowels} if aeon_available() else {})}


# ---------------------------------------------------------------------------------- train and use


def train_model(kind: str, x: np.ndarray, y: np.ndarray, classes: int, seed: int):
    import torch
    from time_series_models import TCN, train

    from unhans.pipeline.small_cnn import small_cnn

    torch.manual_seed(seed)
    model = small_cnn(in_channels=x.shape[1], num_classes=classes, image_size=x.shape[2], width=16) \
        if kind == "image" else TCN(n_features=x.shape[1], n_classes=classes)
    return train(model, x, y, epochs=EPOCHS[kind], seed=seed, lr=2e-3 if kind == "image" else 3e-3)


def probabilities(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.cat([model(b).softmax(1) for b in torch.from_numpy(x).split(256)]).numpy()


def use_test(model, draw: ArtifactDraw, x: np.ndarray, labels: np.ndarray, true_labels: np.ndarray,
             excluded: np.ndarray, seed: int) -> dict:
    """Mean p(poisoned class) over up to 200 inputs of other classes, before and after pasting the artifact."""
    k = draw.poisoned_class
    rng = np.random.default_rng([seed, 41])
    pool = np.flatnonzero((labels != k) & (true_labels != k) & ~excluded)
    chosen = np.sort(rng.choice(pool, size=min(RECIPIENTS, len(pool)), replace=False))
    before = float(probabilities(model, x[chosen])[:, k].mean())
    after = float(probabilities(model, draw.apply(x[chosen], rng))[:, k].mean())
    return {"before": before, "after": after, "rise": after - before, "recipients": len(chosen)}


# -------------------------------------------------------------------------------------------- audit


def audit_command(classes: int) -> list[str]:
    return [sys.executable, "-m", "unhans.pipeline.cli", "audit", "audit.yaml", "--input", "inputs.npy",
            "--labels", "labels.npy", "--model", "net:make_net", "--checkpoint", "net.pt",
            "--num-classes", str(classes), "--workers", "2", "--out", "run", "--quiet"]


def run_audit(folder: Path, classes: int) -> tuple[float, str | None]:
    """The audit subprocess; its seconds and, when it failed, the tail of its stderr."""
    start = time.perf_counter()
    done = subprocess.run(audit_command(classes), cwd=folder, capture_output=True, text=True)
    return time.perf_counter() - start, (done.stderr[-2000:] or "failed") if done.returncode else None


def reset_detector(run: Path) -> None:
    """Remove the markers and outputs of ``spray`` and every later stage; earlier stages stay done."""
    from unhans.storage import Markers, RunLayout
    from unhans.storage import layout as names

    try:
        from unhans.pipeline.audit import USER_STAGES

        stages = [s.STAGE for s in USER_STAGES]
        stages = stages[stages.index("spray"):]
    except Exception:  # a detector being rewritten may not import: the stages known today
        stages = list(DETECTOR_STAGES)
    markers, layout = Markers(run), RunLayout(run)
    for stage in stages:
        markers.clear_stage(stage)
        shutil.rmtree(layout.table(stage), ignore_errors=True)
    for name in (names.SPRAY, names.CLUSTER_MEANS, names.CLASS_EMBEDDINGS, names.CONCEPT_MAPS, names.CLASS_MAPS,
                 names.SUMMARY, names.REPORT):
        path = run / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def adopt_detector_config(run: Path) -> bool:
    """After a detector change of config defaults: take the new ``spray`` and later sections into the
    manifest (the run's explanations do not depend on them). False when another section differs."""
    from unhans.pipeline.config import from_dict, read_yaml, to_dict
    from unhans.storage.atomic import write_json_atomic

    manifest = json.loads((run / "manifest.json").read_text())
    old = manifest["config"]
    new = to_dict(from_dict({**read_yaml(run.parent / "audit.yaml"), "input": old["input"], "model": old["model"]}))
    fixed = ("input", "model", "explain", "dynamics", "faithfulness", "training", "dataset")
    if any(old.get(s) != new.get(s) for s in fixed):
        return False
    write_json_atomic(run / "manifest.json", {**manifest, "config": new})
    return True


def read_results(run: Path, poisoned: int | None, tagged: np.ndarray, labels: np.ndarray) -> dict:
    """Ranking, flagged classes and per-sample artifact metrics from summary.json and the flags table."""
    from sklearn.metrics import roc_auc_score

    from unhans.storage import read_table

    clever = json.loads((run / "summary.json").read_text())["clever_hans"]
    ranking = [int(r["class_id"]) for r in clever["class_ranking"]]
    flagged = sorted({int(c["class_id"]) for c in clever["flagged_clusters"]})
    out = {"ranking": ranking[:5], "flagged_classes": flagged,
           "false_flags": len([k for k in flagged if k != poisoned])}
    if poisoned is None:
        return out
    table = read_table(run, "flags", columns=["sample_id", "artifact_suspect", "artifact_score"]).sort_by("sample_id")
    suspect = table.column("artifact_suspect").to_numpy(zero_copy_only=False).astype(bool)
    score = np.nan_to_num(table.column("artifact_score").to_numpy(zero_copy_only=False).astype(np.float64))
    hits = int((suspect & tagged).sum())
    in_class = labels == poisoned
    out.update(rank=ranking.index(poisoned) + 1 if poisoned in ranking else None,
               flagged=bool(poisoned in flagged and ranking[:1] == [poisoned]),
               precision=hits / max(int(suspect.sum()), 1), recall=hits / max(int(tagged.sum()), 1),
               suspects=int(suspect.sum()), auroc=float(roc_auc_score(tagged[in_class], score[in_class])))
    return out


def class_details(run: Path) -> list[dict]:
    """Every class's candidates (spray.json): per detector its score and, where checked, the counterfactual
    effect, so the verdict can be studied offline (``--confirm-all`` checks every candidate)."""
    out = []
    for info in json.loads((run / "spray.json").read_text())["classes"]:
        row = {"class_id": info["class_id"], "verdict": info.get("verdict")}
        for detector, key in (("pattern", "pattern_candidate"), ("region", "region_candidate")):
            cand = info.get(key) or (info.get("candidate") if detector == "pattern" and
                                     (info.get("candidate") or {}).get("placement") != "region" else None)
            if cand:
                conf = cand.get("confirmation") or {}
                row[detector] = {k: cand.get(k) for k in ("score", "size_fraction", "relevance_evidence", "separation",
                                                           "concentration", "baseline", "dataset_baseline",
                                                           "mislabel_fraction", "placement")}
                row[detector].update({f"cf_{k}": conf.get(k) for k in ("effect", "ci_low", "flip_rate",
                                                                       "control_flip_rate")})
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------- draws


def prepare(kind: str, seed: int, folder: Path, families: list[str] | None, content: str = "random",
            confirm_all: bool = False) -> dict:
    """Data, draw, planting, training and the use test of one draw; writes the audit's inputs to ``folder``.
    ``kind`` is ``image``, ``series`` or ``clean-image`` / ``clean-series`` (no artifact)."""
    import torch

    torch.set_num_threads(2)
    clean = kind.startswith("clean")
    data_kind = kind.removeprefix("clean-")
    table = sources(data_kind)
    source = sorted(table)[np.random.default_rng([seed, 5, RUN_KINDS.index(kind)]).integers(len(table))]
    seconds, start = {}, time.perf_counter()
    x, y = table[source](seed)
    classes = int(y.max()) + 1
    record = {"kind": kind, "seed": seed, "source": source, "n": len(y), "classes": classes, "shape": list(x.shape[1:])}
    rng = np.random.default_rng([seed, 11])
    if clean:
        noise = bool(rng.random() < 0.5)
        labels = flip_symmetric(y, LABEL_NOISE_RATE, classes, rng) if noise else y.copy()
        draw, inputs, tagged, record["label_noise"] = None, x, np.zeros(len(y), bool), noise
    else:
        draw = draw_artifact(seed, data_kind, x.shape[1:], classes, value_range=(0.0, 1.0),
                             feature_std=x.std((0, 2)).tolist() if data_kind == "series" else None, families=families)
        swap_content = content == "swap" or (content == "random" and bool(rng.random() < 0.5))
        planted = plant(draw, x, y, rng, classes, swap_content=swap_content)
        inputs, labels, tagged = planted.inputs, planted.labels, planted.tagged
        record.update(draw=draw.to_dict(), label_noise=draw.label_noise, tagged=int(tagged.sum()),
                      swap_content=swap_content)
    flipped = labels != y
    seconds["data"] = time.perf_counter() - start
    start = time.perf_counter()
    model = train_model(data_kind, inputs, labels, classes, seed)
    seconds["train"] = time.perf_counter() - start
    record["train_accuracy"] = float((probabilities(model, inputs).argmax(1) == labels).mean())
    if draw is not None:
        start = time.perf_counter()
        record["use"] = use_test(model, draw, inputs, labels, y, tagged | flipped, seed)
        record["used"] = record["use"]["rise"] >= USE_RISE
        seconds["use"] = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "inputs.npy", inputs.astype(np.float32))
    np.save(folder / "labels.npy", labels)
    np.savez(folder / "truth.npz", true_labels=y, tagged=tagged, flipped=flipped)
    net = IMAGE_NET.format(channels=x.shape[1], size=x.shape[2]) if data_kind == "image" else \
        SERIES_NET.format(benchmarks=str(HERE), features=x.shape[1])
    (folder / "net.py").write_text(net)
    (folder / "audit.yaml").write_text(AUDIT_CONFIG_ALL if confirm_all else AUDIT_CONFIG)
    torch.save(model.state_dict(), folder / "net.pt")
    record["seconds"] = seconds
    return record


def one_draw(kind: str, seed: int, work: Path, families: list[str] | None, rescore: bool,
             content: str = "random", confirm_all: bool = False, resume: bool = False) -> dict:
    folder = work / f"{kind}-{seed:06d}"
    if resume and not rescore and (folder / "record.json").is_file():  # finished by an earlier, interrupted run
        return json.loads((folder / "record.json").read_text())
    saved = folder / "prepared.json"
    if rescore and saved.is_file() and (folder / "run" / "markers" / "explain.done").is_file():
        record = json.loads(saved.read_text())
        reset_detector(folder / "run")
        (folder / "audit.yaml").write_text(AUDIT_CONFIG_ALL if confirm_all else AUDIT_CONFIG)
        record["rescored"] = True
    else:
        shutil.rmtree(folder, ignore_errors=True)
        record = prepare(kind, seed, folder, families, content, confirm_all)
        saved.write_text(json.dumps(record))
    seconds, error = run_audit(folder, record["classes"])
    if error and "different config" in error and adopt_detector_config(folder / "run"):
        seconds, error = run_audit(folder, record["classes"])
    record["seconds"] = {**record["seconds"], "rescore" if record.get("rescored") else "audit": seconds}
    if error:
        record["error"] = error
    else:
        truth = np.load(folder / "truth.npz")
        labels = np.load(folder / "labels.npy")
        poisoned = record["draw"]["poisoned_class"] if record.get("draw") else None
        try:
            record.update(read_results(folder / "run", poisoned, truth["tagged"], labels))
            record["class_details"] = class_details(folder / "run")
        except (KeyError, ValueError, FileNotFoundError) as exc:  # a summary or table of another shape
            record["error"] = f"reading the results: {exc!r}"
    (folder / "record.json").write_text(json.dumps(record))
    return record


# -------------------------------------------------------------------------------------------- report


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def line(r: dict) -> str:
    seconds = " ".join(f"{k} {v:.0f}s" for k, v in r["seconds"].items() if v >= 0.5)
    if r["kind"].startswith("clean"):
        body = f"{r['kind']:<12} {r['source']:<15} clean, label noise {'on' if r['label_noise'] else 'off'}"
        tail = f"flagged {r.get('flagged_classes')}"
    else:
        d = r["draw"]
        body = (f"{r['kind']:<12} {r['source']:<15} {d['family']:<11} {d['placement']:<8} "
                f"class {d['poisoned_class']:>2} fraction {d['fraction']:.2f} "
                f"use {r['use']['rise']:+.3f}{' ' if r['used'] else '*'}")
        tail = (f"rank {_fmt(r.get('rank'), 'd')} flagged {'yes' if r.get('flagged') else 'no '} "
                f"P {_fmt(r.get('precision'))} R {_fmt(r.get('recall'))} AUROC {_fmt(r.get('auroc'))} "
                f"false flags {_fmt(r.get('false_flags'), 'd')}")
    error = f" ERROR {r['error'].strip().splitlines()[-1][:120]}" if r.get("error") else ""
    return f"seed {r['seed']:>4} {body} | {tail} | {seconds}{error}"


def _median(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else float("nan")


def family_table(records: list[dict]) -> str:
    rows = ["kind    family       draws used flagged  med_P  med_R  med_AUROC false_flags"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("draw"):
            groups.setdefault((r["draw"]["kind"], r["draw"]["family"]), []).append(r)
    for (kind, family), group in sorted(groups.items()):
        used = [r for r in group if r["used"]]
        medians = [_fmt(_median(r.get(key) for r in used)) for key in ("precision", "recall", "auroc")]
        flagged, false_flags = sum(bool(r.get("flagged")) for r in used), sum(r.get("false_flags") or 0 for r in group)
        rows.append(f"{kind:<7} {family:<12} {len(group):>5} {len(used):>4} {flagged:>7} "
                    f"{medians[0]:>6} {medians[1]:>6} {medians[2]:>10} {false_flags:>11}")
    return "\n".join(rows)


def result_line(records: list[dict]) -> str:
    draws = [r for r in records if r.get("draw")]
    used = [r for r in draws if r["used"]]
    false_flags = sum(r.get("false_flags") or 0 for r in records)
    return (f"RESULT used={len(used)}/{len(draws)} flagged={sum(bool(r.get('flagged')) for r in used)}/{len(used)} "
            f"median_precision={_fmt(_median(r.get('precision') for r in used))} "
            f"median_recall={_fmt(_median(r.get('recall') for r in used))} "
            f"median_auroc={_fmt(_median(r.get('auroc') for r in used))} false_flags={false_flags}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-draws", type=int, default=40)
    parser.add_argument("--series-draws", type=int, default=20)
    parser.add_argument("--clean", type=int, default=20, help="runs without an artifact (half image, half series)")
    parser.add_argument("--seed", type=int, default=0, help="the first draw's seed (draw i of each kind: seed + i)")
    parser.add_argument("--work", metavar="DIR", help="keep the per-draw directories here (default: a temporary one)")
    parser.add_argument("--rescore", action="store_true",
                        help="reuse the draws already in --work: rerun only the spray stage and the ones after it")
    parser.add_argument("--jobs", type=int, default=1, help="draws at a time (default 1: the audit uses 2 workers)")
    parser.add_argument("--only-families", metavar="A,B", help="draw only these families (image or series names)")
    parser.add_argument("--content", choices=["random", "keep", "swap"], default="random",
                        help="tagged samples keep their content, or show another class's (poisoning: the artifact is "
                             "their only evidence, so the model must use it); random (default): each draw picks")
    parser.add_argument("--resume", action="store_true",
                        help="keep the draws an earlier run in --work finished (their record.json); run the rest")
    parser.add_argument("--confirm-all", action="store_true",
                        help="check every class's candidates by counterfactual (spray.confirm: all; for calibration)")
    args = parser.parse_args(argv)
    if (args.rescore or args.resume) and not args.work:
        parser.error("--rescore and --resume need --work DIR (the directory of an earlier run)")
    families = args.only_families.split(",") if args.only_families else None
    known = {name for table in FAMILIES.values() for name in table}
    if families and not set(families) <= known:
        parser.error(f"--only-families: unknown {sorted(set(families) - known)}; known: {sorted(known)}")

    lists = []
    for kind, count in (("image", args.image_draws), ("series", args.series_draws)):
        if families is None or set(families) & set(FAMILIES[kind]):
            lists.append([(kind, args.seed + i) for i in range(count)])
    lists.append([("clean-image" if i % 2 == 0 else "clean-series", args.seed + i) for i in range(args.clean)])
    # interleaved in proportion (2 image draws, 1 series draw, 1 clean run, ...): an interrupted run is a sample of all
    longest = max(len(jobs) for jobs in lists)
    jobs = [job for _, job in sorted((i * longest / len(jobs_), job) for jobs_ in lists for i, job in enumerate(jobs_))]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "records.jsonl").write_text("")
        records = []
        print(f"{len(jobs)} runs in {work}; series sources: {', '.join(sources('series'))}; "
              f"* = not used by the model (rise < {USE_RISE})", flush=True)
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for record in pool.map(lambda job: one_draw(*job, work, families, args.rescore, args.content,
                                                              args.confirm_all, args.resume), jobs):
                records.append(record)
                with open(work / "records.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(line(record), flush=True)
        print(family_table(records))
        print(result_line(records))


if __name__ == "__main__":
    main()
