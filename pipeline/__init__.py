"""Orchestration: config, the embedded dataset, training, the Dask explain stage, the audit, the CLI."""
from .config import AuditConfig, ConfigError, load_config

__all__ = ["AuditConfig", "ConfigError", "load_config", "run_audit"]


def run_audit(*args, **kwargs):
    """See :func:`pipeline.audit.run_audit` (imported lazily: it pulls in torch and dask)."""
    from .audit import run_audit as _run

    return _run(*args, **kwargs)
