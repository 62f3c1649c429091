"""Errors raised by the explainers."""

from __future__ import annotations


class UnsupportedModelError(ValueError):
    """The model contains modules (or a structure) for which no LRP rule is defined.

    Raised when an explainer is constructed, before any explanation is computed, so that an
    unsupported model never silently falls back to a plain gradient. ``offenders`` holds
    ``(module_path, type_name)`` pairs; the message lists all of them.
    """

    def __init__(self, offenders: list[tuple[str, str]], reason: str = "unsupported modules") -> None:
        self.offenders = list(offenders)
        listing = ", ".join(f"{path} ({type_name})" for path, type_name in self.offenders)
        super().__init__(f"{reason}: {listing}")
