"""The report stage: report.html from the run store, thumbnails decoded from the user's source."""
from __future__ import annotations

from .context import AuditContext

STAGE = "report"


def run(ctx: AuditContext) -> None:
    from ..report import SIZE_BUDGET_BYTES, write_report
    from ..sample_planes import SamplePlanes
    from ..sources import SampleImages

    spec = ctx.input_spec()
    planes = SamplePlanes(SampleImages(ctx.source()))  # a time series is shown as its features x time plane
    path = write_report(ctx.layout.root, planes, mean=spec.transform.mean, std=spec.transform.std,
                        top_k=ctx.config.report.top_k)
    size = path.stat().st_size
    ctx.markers.mark_stage(STAGE, bytes=size)
    over = f" (over the {SIZE_BUDGET_BYTES / 1e6:.0f} MB budget: lower report.top_k)" if size > SIZE_BUDGET_BYTES else ""
    ctx.log(f"report: {path} ({size / 1e6:.1f} MB){over}")
