"""The dynamics stage: per-sample mislabel evidence, from training dynamics or from the model alone.

With a trajectory (the embedded training stage's, or ``dynamics.trajectory`` recorded in the
user's own loop with ``DynamicsRecorder``): AUM, cartography and forgetting statistics and the
mislabel flags of :mod:`unhans.spray.dynamics`. Without one: the audited model's logits and
penultimate features from the explain pass (:mod:`unhans.spray.label_quality`). Either way the
``dynamics`` table has ``mislabel_score`` and ``mislabel_suspect``, and the stage's marker says
which evidence was used (summary.json ``mislabel.evidence``).
"""
from __future__ import annotations

import numpy as np

from .context import AuditContext

STAGE = "dynamics"


def run(ctx: AuditContext) -> None:
    store = ctx.trajectory_store()
    if store is not None:
        table, evidence = _from_trajectory(ctx, store)
    else:
        table, evidence = _from_model(ctx)
    ctx.write_table(STAGE, table)
    suspects = int(np.asarray(table.column("mislabel_suspect")).sum())
    ctx.markers.mark_stage(STAGE, mislabel_suspects=suspects, evidence=evidence)
    ctx.log(f"dynamics: {suspects} mislabel suspects from {evidence['source']}")


def _from_trajectory(ctx: AuditContext, store) -> tuple:
    from unhans.spray.dynamics import load_trajectory, statistics_from_trajectory

    trajectory = load_trajectory(store)
    table = statistics_from_trajectory(trajectory)
    return table, {"source": "training dynamics", "method": "area under the margin (Pleiss et al. 2020), "
                   "cartography, forgetting", "trajectory": str(store), "epochs": int(trajectory.num_epochs)}


def _from_model(ctx: AuditContext) -> tuple:
    """Model-only evidence. The logits (N x K, 0.8 GB at 200 000 x 1000) are streamed from the
    ``outputs`` table twice, never held at once; the client holds labels, features and votes."""
    import pyarrow as pa

    from unhans.spray import label_quality_from_blocks
    from unhans.storage import iter_table_batches, matrix_column, read_table, table_columns

    root = ctx.layout.root
    samples = read_table(root, "samples", columns=["sample_id", "label", "status"]).sort_by("sample_id")
    labels = samples.column("label").to_numpy().copy()
    labels[np.asarray(samples.column("status").to_pylist()) != "ok"] = -1
    num_classes = int(ctx.manifest()["dataset"]["num_classes"])
    labels[(labels < 0) | (labels >= num_classes)] = -1
    features = None
    if "features" in table_columns(root, "outputs"):
        outputs = read_table(root, "outputs", columns=["sample_id", "features"]).sort_by("sample_id")
        features = matrix_column(outputs.column("features"))
        del outputs

    def blocks():
        for batch in iter_table_batches(root, "outputs", ["sample_id", "logits"]):
            yield batch.column("sample_id").to_numpy(), matrix_column(batch.column("logits"))

    quality = label_quality_from_blocks(blocks, labels, num_classes, features, n_neighbors=ctx.config.spray.n_neighbors,
                                        seed=ctx.config.spray.seed)
    score = np.nan_to_num(quality.score, nan=0.0)
    table = pa.table({
        "sample_id": samples.column("sample_id"),
        "mislabel_score": pa.array(score, pa.float32()),
        "mislabel_suspect": pa.array(quality.suspect & (labels >= 0)),
    })
    return table, {"source": "the audited model (no trajectory)", **quality.evidence}
