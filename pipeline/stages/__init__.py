"""The audit's stages, one module each, named like their completion markers.

Every module has ``STAGE`` (the marker's name) and ``run(ctx)`` taking an
:class:`~unhans.pipeline.stages.context.AuditContext`.
"""
