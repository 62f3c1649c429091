"""The explain stage on an existing Dask scheduler (`--scheduler ADDRESS`)."""
import numpy as np
import pyarrow.parquet as pq
import torch

from unhans.pipeline.config import ExplainRunConfig, from_dict
from unhans.pipeline.explain_command import run_explain
from unhans.pipeline.small_cnn import small_cnn


def test_explain_runs_on_an_existing_scheduler_and_leaves_it_running(tmp_path, capsys):
    from distributed import Client, LocalCluster

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.random((70, 1, 32, 32)).astype(np.float32))
    torch.save(small_cnn().state_dict(), tmp_path / "m.pt")
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        config = from_dict({"input": {"path": str(tmp_path / "x.npy")},
                            "model": {"factory": "unhans.pipeline.small_cnn:small_cnn", "checkpoint": str(tmp_path / "m.pt")},
                            "explain": {"shard_size": 32},
                            "cluster": {"scheduler": cluster.scheduler_address}}, ExplainRunConfig)
        result = run_explain(config, tmp_path / "run", quiet=True)
        assert result["quarantined"] == 0
        # this cluster was started with Dask's default nanny environment: the user is told
        assert "MALLOC_TRIM_THRESHOLD_=65536" in capsys.readouterr().err
        with Client(cluster.scheduler_address) as client:  # the user's cluster outlives the run
            assert len(client.scheduler_info()["workers"]) == 1
    table = pq.read_table(tmp_path / "run" / "tables" / "samples")
    assert sorted(table.column("sample_id").to_pylist()) == list(range(70))


def _malloc_trim_threshold():
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_start_without_dasks_malloc_trim_threshold():
    from unhans.pipeline.cluster import dask_client
    from unhans.pipeline.config import ClusterConfig

    with dask_client(ClusterConfig(workers=1, threads_per_worker=1), use_gpus=False) as client:
        assert list(client.run(_malloc_trim_threshold).values()) == [None]
