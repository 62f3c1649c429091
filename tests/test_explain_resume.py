"""A killed audit or a killed worker loses and duplicates nothing: explain stage (issue #4) and spray stage (#11)."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
import zarr

from unhans.pipeline import run_audit
from unhans.pipeline.config import from_dict

CONFIG = {"explain": {"shard_size": 32}, "spray": {"umap": False}}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted audit with small units (40 of them)."""
    root = tmp_path_factory.mktemp("resume")
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    run_audit(from_dict(CONFIG), root / "reference", quiet=True)
    return root


def _without_explain(reference: Path, target: Path) -> Path:
    """A copy of the reference run as it was right after training (same model, same data)."""
    shutil.copytree(reference / "reference", target)
    for stage in ("explain", "faithfulness", "dynamics", "spray", "flags", "report"):
        (target / "markers" / f"{stage}.done").unlink()
    shutil.rmtree(target / "markers" / "explain")
    shutil.rmtree(target / "heatmaps.zarr")
    shutil.rmtree(target / "tables" / "samples")
    return target


def _samples(run: Path):
    table = pq.read_table(run / "tables" / "samples").sort_by("sample_id")
    return table.drop_columns(["source"]).to_pydict()


def _assert_same_outputs(a: Path, b: Path) -> None:
    rows_a, rows_b = _samples(a), _samples(b)
    assert rows_b["sample_id"] == list(range(1257))  # every sample once: none lost, none duplicated
    assert rows_a == rows_b
    np.testing.assert_array_equal(zarr.open_array(a / "heatmaps.zarr")[:], zarr.open_array(b / "heatmaps.zarr")[:])


def _units_done(run: Path) -> int:
    folder = run / "markers" / "explain"
    return len(list(folder.glob("*.done"))) if folder.is_dir() else 0


def test_sigkill_during_explain_then_rerun_gives_the_uninterrupted_result(reference):
    run = _without_explain(reference, reference / "killed")
    command = [sys.executable, "-m", "unhans.pipeline.cli", "audit", str(reference / "config.yaml"), "--out", str(run), "--quiet"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _units_done(run) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the audit and its LocalCluster, mid-stage
    proc.wait()
    done_at_kill = _units_done(run)
    assert 0 < done_at_kill < 40, f"the kill did not land mid-stage ({done_at_kill} of 40 units done)"
    assert not (run / "markers" / "explain.done").exists()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    _assert_same_outputs(reference / "reference", run)


def test_a_worker_killed_mid_stage_is_replaced_and_the_stage_completes(reference):
    from unhans.pipeline.stages import explain
    from unhans.pipeline.stages.context import AuditContext
    from unhans.storage import Markers, RunLayout

    run = _without_explain(reference, reference / "worker-killed")
    config = from_dict(CONFIG)
    killed = []

    def kill_one_worker_when_busy():
        deadline = time.time() + 120
        while _units_done(run) < 2 and time.time() < deadline:
            time.sleep(0.005)
        for proc in _worker_processes():
            os.kill(proc, signal.SIGKILL)
            killed.append(proc)
            return

    killer = threading.Thread(target=kill_one_worker_when_busy, daemon=True)
    killer.start()
    ctx = AuditContext(config, RunLayout(run), Markers(run), quiet=True)
    try:
        explain.run(ctx)
    finally:
        ctx.close()
    killer.join(timeout=5)
    assert killed, "no worker process was found to kill"
    _assert_same_outputs(reference / "reference", run)


def _worker_processes() -> list[int]:
    """PIDs of the LocalCluster's worker processes (spawned children of this process)."""
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)
            if any("spawn_main" in part for part in p.cmdline())]


def _without_spray(reference: Path, target: Path, keep_classes: tuple[int, ...] = ()) -> Path:
    """A copy of the reference run as it was before the spray stage (or with some classes done)."""
    from unhans.storage import RunLayout

    shutil.copytree(reference / "reference", target)
    layout = RunLayout(target)
    for stage in ("spray", "flags", "report"):
        (layout.markers / f"{stage}.done").unlink()
    for marker in (layout.markers / "spray").glob("*.done"):
        if int(marker.stem) not in keep_classes:
            marker.unlink()
            (layout.table("spray") / f"part-{int(marker.stem):08d}.parquet").unlink()
            layout.class_means(int(marker.stem)).unlink()
    layout.spray.unlink()
    return target


def _assert_same_spray(a: Path, b: Path) -> None:
    import json

    table_a = pq.read_table(a / "tables" / "spray").sort_by("sample_id")
    table_b = pq.read_table(b / "tables" / "spray").sort_by("sample_id")
    assert table_b.column("sample_id").to_pylist() == list(range(1257))  # every sample once
    assert table_a.column_names == table_b.column_names
    for name in table_a.column_names:
        np.testing.assert_array_equal(table_a.column(name).to_numpy(zero_copy_only=False),
                                      table_b.column(name).to_numpy(zero_copy_only=False), err_msg=name)
    assert json.loads((a / "spray.json").read_text()) == json.loads((b / "spray.json").read_text())


def _spray_stage(run: Path, during=None) -> None:
    from unhans.pipeline.stages import spray
    from unhans.pipeline.stages.context import AuditContext
    from unhans.storage import Markers, RunLayout

    ctx = AuditContext(from_dict(CONFIG), RunLayout(run), Markers(run), quiet=True)
    try:
        spray.run(ctx)
    finally:
        ctx.close()


def test_a_worker_killed_during_spray_is_replaced_and_the_stage_completes(reference):
    run = _without_spray(reference, reference / "spray-worker-killed")
    classes_done_at_kill = []

    def kill_one_worker_when_a_class_is_done():
        deadline = time.time() + 120
        folder = run / "markers" / "spray"
        while time.time() < deadline and not (folder.is_dir() and any(folder.glob("*.done"))):
            time.sleep(0.002)
        workers = _worker_processes()
        if workers:
            classes_done_at_kill.append(len(list(folder.glob("*.done"))))
            os.kill(workers[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker_when_a_class_is_done, daemon=True)
    killer.start()
    _spray_stage(run)
    killer.join(timeout=5)
    assert classes_done_at_kill and classes_done_at_kill[0] < 10, "the kill did not land mid-stage"
    _assert_same_spray(reference / "reference", run)


def test_a_rerun_of_the_spray_stage_recomputes_only_the_classes_without_a_marker(reference):
    kept = (0, 3, 7)
    run = _without_spray(reference, reference / "spray-resumed", keep_classes=kept)
    before = {c: (run / "markers" / "spray" / f"{c:08d}.done").stat().st_mtime_ns for c in kept}
    _spray_stage(run)
    after = {c: (run / "markers" / "spray" / f"{c:08d}.done").stat().st_mtime_ns for c in kept}
    assert before == after
    assert len(list((run / "markers" / "spray").glob("*.done"))) == 10
    _assert_same_spray(reference / "reference", run)
