"""How a worker rebuilds the model: three formats, each loaded safely.

- ``factory``: a ``package.module:callable`` returning an ``nn.Module`` (called with
  ``kwargs``), then a state dict from ``checkpoint``;
- ``torchvision``: a torchvision model name (``resnet18``, ``vgg16_bn`` ...) built without
  weights (``num_classes`` from kwargs), then the state dict from ``checkpoint``;
- ``torchscript``: a TorchScript file (``torch.jit.load``); gradient-based methods only,
  since LRP rewrites eager modules.

State dicts are read with ``torch.load(weights_only=True)`` unless ``trust_checkpoint`` is
set: a pickled checkpoint can run arbitrary code when loaded.
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import replace
from pathlib import Path

from .config import ModelConfig

MODEL_KINDS = ("factory", "torchvision", "torchscript")


class ModelLoadError(ValueError):
    """The model cannot be built or its weights cannot be loaded; the message says which file and why."""


def absolute_model(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with an absolute checkpoint path, and the working directory remembered for factory imports.

    A factory ``mymodels:make_net`` next to the user's config is found on the workers too: the
    working directory where the command ran travels with the spec (``search_path``).
    """
    checkpoint = str(Path(cfg.checkpoint).expanduser().resolve()) if cfg.checkpoint else None
    return replace(cfg, checkpoint=checkpoint, search_path=cfg.search_path or os.getcwd())


def build_model(cfg: ModelConfig, device: str = "cpu"):
    """The model of ``cfg`` in eval mode on ``device``; raises :class:`ModelLoadError`."""
    return _Builder(cfg).build(device)


class _Builder:
    def __init__(self, cfg: ModelConfig):
        self.kind, self.factory, self.name = cfg.kind, cfg.factory, cfg.name
        self.checkpoint, self.kwargs = cfg.checkpoint, dict(cfg.kwargs or {})
        self.trust_checkpoint, self.search_path = cfg.trust_checkpoint, cfg.search_path

    def build(self, device: str):
        if self.kind == "torchscript":
            return self._torchscript(device)
        if self.kind == "factory":
            model = self._from_factory()
        elif self.kind == "torchvision":
            model = self._from_torchvision()
        else:
            raise ModelLoadError(f"model.kind: unknown kind {self.kind!r} ({', '.join(MODEL_KINDS)})")
        if self.checkpoint:
            self._load_state(model)
        return model.to(device).eval()

    def _from_factory(self):
        if not self.factory:
            raise ModelLoadError("model.factory: required for kind 'factory' (e.g. 'mypackage.models:make_net')")
        module_name, _, attr = self.factory.partition(":")
        if not attr:
            raise ModelLoadError(f"model.factory: {self.factory!r} must look like 'package.module:callable'")
        if self.search_path and self.search_path not in sys.path:
            sys.path.append(self.search_path)
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelLoadError(f"model.factory: cannot import {self.factory!r}: {exc}") from None
        try:
            return factory(**self.kwargs)
        except TypeError as exc:
            raise ModelLoadError(f"model.factory: {self.factory}(**{self.kwargs}) failed: {exc}") from None

    def _from_torchvision(self):
        import torchvision

        if not self.name:
            raise ModelLoadError("model.name: required for kind 'torchvision' (e.g. 'resnet18')")
        try:
            builder = torchvision.models.get_model_builder(self.name)
        except ValueError:
            raise ModelLoadError(f"model.name: torchvision has no model {self.name!r}") from None
        return builder(weights=None, **self.kwargs)

    def _load_state(self, model) -> None:
        import pickle

        import torch

        path = Path(self.checkpoint)
        if not path.is_file():
            raise ModelLoadError(f"model.checkpoint: file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=not self.trust_checkpoint)
        except pickle.UnpicklingError as exc:
            if not self.trust_checkpoint and "Unsupported global" in str(exc):
                raise ModelLoadError(
                    f"model.checkpoint: {path} holds more than tensors and was refused by the safe loader "
                    "(weights_only=True). Save a state_dict, or, only if you trust the file, set "
                    "model.trust_checkpoint: true (--trust-checkpoint)") from None
            raise ModelLoadError(f"model.checkpoint: {path} is not a readable torch checkpoint ({exc})") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise ModelLoadError(f"model.checkpoint: {path} is not a readable torch checkpoint "
                                 f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ModelLoadError(f"model.checkpoint: {path} holds a {type(state).__name__}, expected a state_dict")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()
            detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
            raise ModelLoadError(f"model.checkpoint: {path} does not fit the model: {detail}") from None

    def _torchscript(self, device: str):
        import torch

        path = Path(self.checkpoint or "")
        if not path.is_file():
            raise ModelLoadError(f"model.checkpoint: TorchScript file not found: {path}")
        try:
            return torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"model.checkpoint: {path} is not a TorchScript file "
                                 f"({str(exc).splitlines()[0]})") from None
