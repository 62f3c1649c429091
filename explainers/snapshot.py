"""Private, frozen copies of the user's model.

Every explainer works on a deep copy made once at construction: in eval mode, parameters
frozen (``requires_grad=False``, so backward computes input gradients only), user hooks
removed (hooks of ``torch.nn.utils`` that compute weights — pruning, weight norm — are kept).
The user's model is therefore never touched — no mode switch, no running-statistics update,
no parameter swap, no leftover hook — and explanations reflect the model *as it was when the
explainer was built*. Copies for other devices/dtypes are made on first use, under a lock,
so one explainer can serve several threads and devices.
"""

from __future__ import annotations

import copy
import threading

import torch
from torch import nn

from .errors import UnsupportedModelError

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _computes_parameters(hook: object) -> bool:
    """Hooks of ``torch.nn.utils`` (pruning, weight/spectral norm) compute weights: part of the model."""
    return type(hook).__module__.startswith("torch.nn.utils")


def frozen_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` in eval mode, with frozen parameters and no hooks."""
    try:
        with torch.inference_mode(False):  # normal tensors even if built under inference_mode
            frozen = copy.deepcopy(model)
    except RuntimeError as error:  # e.g. pruning/weight_norm tensors that are not graph leaves
        raise UnsupportedModelError([("<model>", f"not deep-copyable: {error}")], "cannot copy the model") from error
    frozen.eval()
    if isinstance(frozen, torch.jit.ScriptModule):
        # TorchScript (gradient methods only): no Python hooks to strip, and its copied parameters
        # cannot be frozen in place; input gradients are taken with autograd.grad(..., x), which
        # never accumulates into them.
        return frozen
    frozen.requires_grad_(False)
    for module in frozen.modules():
        for attribute in _HOOK_DICTS:
            hooks = getattr(module, attribute, None)
            for key in [key for key, hook in (hooks or {}).items() if not _computes_parameters(hook)]:
                del hooks[key]
        for parameter in module.parameters(recurse=False):
            parameter.grad = None
    return frozen


def _placement(module: nn.Module) -> tuple[torch.device, torch.dtype] | None:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return None


class DeviceCopies:
    """One frozen module per ``(device, dtype)``, created lazily by converting the first one."""

    def __init__(self, frozen: nn.Module) -> None:
        self._base = frozen
        self._copies = {_placement(frozen): frozen}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # picklable (e.g. for dask): keep the first copy, drop the lock
        return {"base": self._base}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["base"])

    def get(self, x: torch.Tensor) -> nn.Module:
        """The copy placed on ``x``'s device with ``x``'s floating dtype."""
        if None in self._copies:  # no floating parameters or buffers: works anywhere
            return self._base
        key = (x.device, x.dtype)
        found = self._copies.get(key)
        if found is None:
            with self._lock:
                found = self._copies.get(key)
                if found is None:
                    with torch.inference_mode(False):
                        found = copy.deepcopy(self._base).to(device=x.device, dtype=x.dtype)
                    self._copies[key] = found
        return found
