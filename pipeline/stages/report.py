"""The report stage: report.html from the run store, thumbnails decoded from the user's source."""
from __future__ import annotations

from .context import AuditContext

STAGE = "report"


def run(ctx: AuditContext) -> None:
    from ..report import write_report
    from ..sources import SampleImages

    spec = ctx.input_spec()
    path = write_report(ctx.layout.root, SampleImages(ctx.source()), mean=spec.transform.mean, std=spec.transform.std)
    ctx.markers.mark_stage(STAGE)
    ctx.log(f"report: {path}")
