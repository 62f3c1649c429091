"""What the explain stage reads from one extra no-grad forward pass: penultimate features and latent profiles.

- **Penultimate features**: the input of the model's last ``nn.Linear`` (what a nearest-neighbour
  label check compares), randomly projected to at most :data:`FEATURE_DIMS` dimensions.
- **Latent profile**: for every channel of a hidden layer (``explain.latent_layer``; ``auto`` is the
  middle convolution of the model among those with at most :data:`AUTO_MAX_CHANNELS` channels), the maximum and the mean over positions of its positive part,
  ``[max_p relu(a_cp), mean_p relu(a_cp)]`` for c = 1..C, a vector of 2C numbers per sample. A
  channel that fires on a pattern fires wherever the pattern sits, and at a middle layer also on
  a resized copy of it (its receptive field is a few input pixels wide, smaller than most
  artifacts): the profile is where a moving or rescaled shortcut stands still
  (:mod:`unhans.spray.latent_concepts`). The maximum answers "is it anywhere"; the mean answers
  "is it everywhere" (a background texture).

Both come from the user's own model (no copy, no gradient), in the explain stage's batches.
"""
from __future__ import annotations

FEATURE_DIMS = 128
AUTO_MAX_CHANNELS = 256  # auto layer: 2 x 256 float32 = 2 KB per sample in the outputs table at most


def last_linear(model):
    """The model's last ``nn.Linear`` (its input is the penultimate feature vector), or None."""
    import torch.nn as nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def latent_layer_path(model, layer: str) -> str | None:
    """The module path of the latent layer: ``layer`` checked; for ``"auto"`` the middle one of the model's
    convolutions with at most :data:`AUTO_MAX_CHANNELS` output channels (None when it has none); None for
    ``"none"``."""
    import torch.nn as nn

    if layer == "none":
        return None
    if layer == "auto":
        convs = [path for path, m in model.named_modules()
                 if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.out_channels <= AUTO_MAX_CHANNELS]
        return convs[len(convs) // 2] if convs else None
    try:
        model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"explain.latent_layer={layer!r} is not a module of the model "
                         "(see model.named_modules())") from None
    return layer


def latent_profile(outputs: list) -> "object":
    """(B, 2C) profile of a layer's outputs (each (B, C, *positions) or (B, C)) in one forward: the channel
    maxima and means of their positive part over positions, taken over every call of the layer."""
    import torch

    flat = [o.detach().float().clamp_min(0).flatten(2) if o.ndim > 2 else o.detach().float().clamp_min(0)[..., None]
            for o in outputs]
    values = torch.cat(flat, dim=2)                                   # (B, C, all positions of all calls)
    return torch.cat([values.amax(2), values.mean(2)], dim=1)


class ActivationProbe:
    """Penultimate features and/or the latent profile of a batch, from one no-grad forward of ``model``.

    ``probe(x)`` returns ``(features (B, ≤ FEATURE_DIMS) or None, latent (B, 2C) or None)`` on the CPU.
    """

    def __init__(self, model, *, features: bool, latent_layer: str | None):
        self.model, self.projection = model, None
        self.feature_layer = last_linear(model) if features else None
        self.latent_path = latent_layer
        self.latent_layer = model.get_submodule(latent_layer) if latent_layer else None

    @property
    def active(self) -> bool:
        return self.feature_layer is not None or self.latent_layer is not None

    def __call__(self, x):
        import torch

        if not self.active:
            return None, None
        inputs, outputs, handles = [], [], []
        if self.feature_layer is not None:
            handles.append(self.feature_layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach())))
        if self.latent_layer is not None:
            handles.append(self.latent_layer.register_forward_hook(lambda _m, _a, out: outputs.append(out)))
        try:
            with torch.no_grad():
                self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        latent = None
        if self.latent_layer is not None:
            if not outputs or not all(isinstance(o, torch.Tensor) and o.ndim >= 2 for o in outputs):
                raise RuntimeError(f"explain.latent_layer {self.latent_path!r} did not give a (batch, channels, ...) "
                                   "tensor in the forward pass; name a convolution or another channel layer")
            latent = latent_profile(outputs).cpu()
        return (self._features(inputs[-1]) if inputs else None), latent

    def _features(self, captured):
        import torch

        features = captured.flatten(1).float()
        if features.shape[1] > FEATURE_DIMS:
            if self.projection is None or self.projection.shape[0] != features.shape[1]:
                generator = torch.Generator().manual_seed(0)
                self.projection = (torch.randn(features.shape[1], FEATURE_DIMS, generator=generator)
                                   / FEATURE_DIMS ** 0.5).to(features.device)
            features = features @ self.projection
        return features.cpu()
