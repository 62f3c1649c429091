"""Every unhans explainer as a Quantus ``explain_func``.

Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with numpy
arrays and expects numpy attributions. Its randomization metrics pass a randomized deep copy of
the model, so the explainer is built for the model it receives, on every call::

    import quantus
    from unhans.explainers.quantus_adapter import explain_func

    metric = quantus.MPRT()
    metric(model=model, x_batch=x, y_batch=y, explain_func=explain_func,
           explain_func_kwargs={"method": "lrp", "composite": "epsilon_plus_flat"})

The attributions come back as (B, 1, *spatial): the relevance summed over the input channels,
which is what unhans stores and what Quantus broadcasts over the channels.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def explain_func(model: nn.Module, inputs: Any, targets: Any, method: str = "lrp", device: str | None = None,
                 **options: Any) -> np.ndarray:
    """Explain ``inputs`` (B, C, *spatial) for ``targets`` (B,) with the unhans explainer ``method`` (float32 numpy).

    ``options`` go to the explainer (e.g. ``composite=`` for LRP); ``device`` defaults to the model's.
    """
    from .registry import make_explainer

    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device).reshape(-1)
    relevance = make_explainer(model, method, **options)(x, t)
    return relevance.detach().sum(1, keepdim=True).float().cpu().numpy()
