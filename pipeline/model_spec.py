"""How a worker rebuilds the model: a ``package.module:factory`` callable plus a state dict."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """A picklable recipe for the model: ``factory(**kwargs)`` then ``checkpoint`` loaded.

    The checkpoint is loaded with ``weights_only=True`` unless ``trust_checkpoint`` is set.
    """

    factory: str
    checkpoint: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    trust_checkpoint: bool = False

    def build(self, device: str = "cpu"):
        import torch

        module_name, _, attr = self.factory.partition(":")
        if not attr:
            raise ValueError(f"model factory {self.factory!r} must look like 'package.module:callable'")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"model factory {self.factory!r} cannot be imported: {exc}") from exc
        model = factory(**self.kwargs)
        path = Path(self.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"model checkpoint not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=not self.trust_checkpoint)
        model.load_state_dict(state)
        return model.to(device).eval()
