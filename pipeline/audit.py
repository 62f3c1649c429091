"""``unhans audit``: the stage list and the resume loop.

Embedded digits: data → train (recording dynamics) → explain → faithfulness → dynamics → spray → flags → report.
Your own data (``input:`` + ``model:``): data → explain → faithfulness → dynamics → spray → flags → report, with
no training stage. Each stage lives in :mod:`unhans.pipeline.stages` under its marker's name; a
stage whose marker exists is skipped on a rerun, and the explain stage also resumes unit by unit.
Stages talk only through the run directory (:mod:`unhans.storage`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .config import AuditConfig, to_dict
from .stages import data, dynamics, explain, faithfulness, flags, report, spray, train
from .stages.context import AuditContext

EMBEDDED_STAGES = [data, train, explain, faithfulness, dynamics, spray, flags, report]
USER_STAGES = [data, explain, faithfulness, dynamics, spray, flags, report]


def stages_for(config: AuditConfig) -> list:
    """The stage modules of this audit, in order (each has ``STAGE`` and ``run(ctx)``)."""
    return EMBEDDED_STAGES if config.embedded else USER_STAGES


def run_audit(config: AuditConfig, out: str | Path, *, force: bool = False, quiet: bool = False,
              reuse: str | Path | None = None, reuse_rehash: bool = False) -> dict:
    """Run every stage not yet finished in ``out``; returns summary.json as a dict.

    ``force`` starts the run directory over (its old outputs are deleted first); ``reuse``: an earlier
    run whose explanations of unchanged samples are copied instead of recomputed
    (:mod:`unhans.pipeline.stages.explain_reuse`); image files unchanged by their size and modification time are
    not read again unless ``reuse_rehash`` (:mod:`unhans.pipeline.image_index`).
    """
    from unhans.storage import RunLayout, init_run, prepare_run_dir

    layout = RunLayout(Path(out))
    if reuse is not None:  # before anything is deleted: --force must never touch the earlier run
        old, new = Path(reuse).resolve(), layout.root.resolve()
        if old == new or new in old.parents or old in new.parents:
            raise FileExistsError(f"--reuse {reuse}: the earlier run must be a directory apart from --out {out}")
    prepare_run_dir(layout.root, force=force)
    ctx = AuditContext(config=config, layout=layout, markers=init_run(layout.root, to_dict(config)), quiet=quiet,
                       reuse=Path(reuse) if reuse is not None else None, reuse_rehash=reuse_rehash)
    total = time.perf_counter()
    try:
        for stage in stages_for(config):
            name = stage.STAGE
            if ctx.markers.stage_done(name):
                ctx.log(f"{name}: done already, skipped")
                continue
            start = time.perf_counter()
            stage.run(ctx)
            info = ctx.markers.stage_info(name) or {}
            if "seconds" not in info:  # every stage's wall time, for summary.json and nightly comparisons
                ctx.markers.mark_stage(name, **{k: v for k, v in info.items() if k not in ("stage", "finished")},
                                       seconds=time.perf_counter() - start)
    finally:
        ctx.close()
    ctx.log(f"audit finished in {time.perf_counter() - total:.1f}s")
    return json.loads(layout.summary.read_text())
