"""Persisting a trajectory under a run directory: format, size, atomicity, resuming after a crash."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unhans.spray.dynamics import DynamicsRecorder, load_trajectory, statistics_from_trajectory
from unhans.spray.dynamics.trajectory_store import epoch_path

N, K, BATCH = 50, 4, 8


def epoch_batches(epoch, num_samples=N):
    """The seeded batches of one epoch: a random order of all ids, random logits and labels."""
    g = torch.Generator().manual_seed(1000 + epoch)
    order = torch.randperm(num_samples, generator=g)
    logits = torch.randn(num_samples, K, generator=g) * 3
    labels = torch.randint(0, K, (num_samples,), generator=g)
    return [(order[s:s + BATCH], logits[s:s + BATCH], labels[order[s:s + BATCH]])
            for s in range(0, num_samples, BATCH)]


def train(rec, epochs, stop_after_batches=None):
    """Record ``epochs``; with ``stop_after_batches``, the last epoch is cut off (a crash) before end_epoch."""
    for epoch in epochs:
        for b, (idx, logits, y) in enumerate(epoch_batches(epoch)):
            if stop_after_batches is not None and epoch == epochs[-1] and b == stop_after_batches:
                return
            rec.update(idx, logits, y)
        rec.end_epoch()


def assert_tables_equal(a, b):
    assert a.schema == b.schema
    for name in a.column_names:
        np.testing.assert_array_equal(a.column(name).to_numpy(zero_copy_only=False),
                                      b.column(name).to_numpy(zero_copy_only=False), err_msg=name)


def test_each_closed_epoch_is_one_file_in_the_run_directory(tmp_path):
    with DynamicsRecorder(N, K, store=tmp_path) as rec:
        train(rec, [0, 1, 2])
    assert sorted(p.name for p in (tmp_path / "dynamics").iterdir()) == [
        "epoch-00000.npz", "epoch-00001.npz", "epoch-00002.npz"]


def test_epoch_file_costs_about_five_bytes_per_sample(tmp_path):
    n = 200_000
    rec = DynamicsRecorder(n, 10, store=tmp_path)
    rec.update(torch.arange(n), torch.randn(n, 10), torch.randint(0, 10, (n,)))
    rec.end_epoch()
    rec.flush()
    size = epoch_path(tmp_path, 0).stat().st_size
    assert size <= 5 * n + 2048
    assert size / n < 5.02


def test_restart_mid_epoch_redoes_the_epoch_and_matches_an_uninterrupted_run(tmp_path):
    uninterrupted = DynamicsRecorder(N, K, store=tmp_path / "a")
    train(uninterrupted, [0, 1, 2, 3])

    crashed = DynamicsRecorder(N, K, store=tmp_path / "b")
    train(crashed, [0, 1, 2], stop_after_batches=3)  # epoch 2 never closed
    del crashed
    resumed = DynamicsRecorder(N, K, store=tmp_path / "b")
    assert resumed.num_epochs == 2
    train(resumed, [2, 3])

    assert_tables_equal(uninterrupted.statistics(), resumed.statistics())
    assert_tables_equal(uninterrupted.statistics(), statistics_from_trajectory(load_trajectory(tmp_path / "b")))


def test_in_memory_statistics_equal_statistics_of_the_stored_trajectory(tmp_path):
    in_memory = DynamicsRecorder(N, K)
    stored = DynamicsRecorder(N, K, store=tmp_path)
    train(in_memory, [0, 1, 2])
    train(stored, [0, 1, 2])
    traj = load_trajectory(tmp_path)
    assert (traj.num_epochs, traj.num_samples, traj.num_classes) == (3, N, K)
    np.testing.assert_array_equal(traj.margin, in_memory.trajectory.margin)
    assert_tables_equal(in_memory.statistics(), statistics_from_trajectory(traj))


def test_load_resumes_with_sizes_read_from_the_store(tmp_path):
    train(DynamicsRecorder(N, K, store=tmp_path), [0])
    rec = DynamicsRecorder.load(tmp_path)
    assert (rec.num_samples, rec.num_classes, rec.num_epochs) == (N, K, 1)
    train(rec, [1])
    assert load_trajectory(tmp_path).num_epochs == 2


def test_another_process_appends_to_the_same_store(tmp_path):
    with DynamicsRecorder(N, K, store=tmp_path) as rec:  # flushed before another process reads
        train(rec, [0])
    script = (
        "import torch\nfrom spray.dynamics import DynamicsRecorder\n"
        f"rec = DynamicsRecorder.load({str(tmp_path)!r})\n"
        f"rec.update(torch.arange({N}), torch.zeros({N}, {K}), torch.zeros({N}, dtype=torch.long))\n"
        "rec.end_epoch()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    traj = load_trajectory(tmp_path)
    assert traj.num_epochs == 2 and (traj.correct[1] == 0).all()  # all-zero logits: ties, not correct


def test_a_stray_temporary_file_from_a_crashed_write_is_ignored(tmp_path):
    train(DynamicsRecorder(N, K, store=tmp_path), [0])
    (tmp_path / "dynamics" / ".epoch-00001.1234.deadbeef.tmp").write_bytes(b"partial")
    assert DynamicsRecorder(N, K, store=tmp_path).num_epochs == 1


def test_a_store_of_another_shape_is_rejected(tmp_path):
    train(DynamicsRecorder(N, K, store=tmp_path), [0])
    with pytest.raises(ValueError, match="num_samples=50"):
        DynamicsRecorder(N + 1, K, store=tmp_path)
    with pytest.raises(ValueError, match="num_classes=4"):
        DynamicsRecorder(N, K + 1, store=tmp_path)


def test_a_gap_in_the_stored_epochs_is_an_error(tmp_path):
    with DynamicsRecorder(N, K, store=tmp_path) as rec:
        train(rec, [0, 1, 2])
    epoch_path(tmp_path, 1).unlink()
    with pytest.raises(ValueError, match="epoch 1 is missing"):
        load_trajectory(tmp_path)


def test_loading_a_store_without_epochs_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_trajectory(tmp_path)
    with pytest.raises(FileNotFoundError):
        DynamicsRecorder.load(tmp_path)


def test_readers_in_the_same_process_see_every_closed_epoch_without_a_flush(tmp_path):
    rec = DynamicsRecorder(N, K, store=tmp_path)
    for epochs in ([0], [1, 2]):
        train(rec, epochs)
        assert load_trajectory(tmp_path).num_epochs == rec.num_epochs
    assert DynamicsRecorder.load(tmp_path).num_epochs == 3


def test_a_failed_write_is_raised_by_the_next_epoch_and_later_epochs_are_not_stored(tmp_path, monkeypatch):
    import unhans.spray.dynamics.trajectory_store as store_module

    real_write = store_module._write_file

    def fail_on_epoch_1(path, epoch, record, num_classes):
        if epoch == 1:
            raise OSError(28, "No space left on device")
        return real_write(path, epoch, record, num_classes)

    monkeypatch.setattr(store_module, "_write_file", fail_on_epoch_1)
    rec = DynamicsRecorder(N, K, store=tmp_path)
    train(rec, [0, 1])
    with pytest.raises(OSError, match="No space left"):
        rec.flush()
    with pytest.raises(OSError, match="epochs from the failed one on are not stored"):
        train(rec, [2])
    assert rec.num_epochs == 3  # closed in memory all the same
    assert load_trajectory(tmp_path).num_epochs == 1  # contiguous: epoch 2 was not written after the gap
