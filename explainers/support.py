"""Which modules the LRP engine understands, and the check that refuses everything else.

A model is supported when every module is either a *known layer* (below) or a *container*
whose children are all supported. Containers are ``nn.Sequential``/``ModuleList``/
``ModuleDict`` and modules defined outside ``torch`` (their forward composes children and torch
operations; :mod:`.dataflow` checks every operation), such as torchvision's
``SqueezeExcitation``, DenseNet blocks, a TCN's ``Chomp1d`` or a ViT's encoder with its class
token and position embedding. torchvision's ``StochasticDepth`` is the identity in eval mode.
Attention (``nn.MultiheadAttention``) and ``nn.LayerNorm``/``nn.RMSNorm`` have AttnLRP rules
(:mod:`.attention_rules`); ``nn.TransformerEncoderLayer``/``nn.TransformerEncoder`` are torch
forward code over those parts, checked like any other. Anything else — recurrent layers,
normalisation other than these and BatchNorm, other torch modules with their own forward code
(``nn.TransformerDecoderLayer``), a subclass overriding ``forward`` — is reported, with its path, by :class:`UnsupportedModelError`
instead of being explained by a silent fall back to the gradient.
"""

from __future__ import annotations

from torch import nn

from .errors import UnsupportedModelError

AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
AVG_POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
MAX_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
RELU = (nn.ReLU,)
#: element-wise activations, explained by the Pass rule
ACTIVATIONS = (
    nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)  # fmt: skip
#: padding layers: the plain gradient hands each input element the relevance of its copies; the
#: padded constants, which do not depend on the input, get none
PADDING = tuple(getattr(nn, name) for name in (
    "ConstantPad1d", "ConstantPad2d", "ConstantPad3d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ReflectionPad1d",
    "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d",
    "CircularPad1d", "CircularPad2d", "CircularPad3d",
) if hasattr(nn, name))  # fmt: skip
#: modules whose plain gradient is the LRP propagation (identity, reshaping, padding)
PASS_THROUGH = (
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
) + PADDING  # fmt: skip
#: activations that can act as gates, ``features ⊙ gate(…)`` (squeeze-excitation); see :mod:`.dataflow`
GATES = (nn.Sigmoid, nn.Hardsigmoid)
#: normalisations explained by AttnLRP's identity rule on the normalising factor (:mod:`.attention_rules`)
LAYER_NORMS = tuple(getattr(nn, name) for name in ("LayerNorm", "RMSNorm") if hasattr(nn, name))
#: attention, explained by AttnLRP as explicit forward code (:class:`.attention_rules.AttentionRule`)
ATTENTION = (nn.MultiheadAttention,)
KNOWN_LAYERS = AFFINE + BATCH_NORM + AVG_POOL + MAX_POOL + RELU + ACTIVATIONS + PASS_THROUGH + LAYER_NORMS + ATTENTION
#: layers of other libraries that are the identity in eval mode (named, so no import is needed)
EVAL_IDENTITIES = {"torchvision.ops.stochastic_depth.StochasticDepth"}
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
#: torch modules whose forward code only composes supported children and operations (checked by the data flow
#: like any forward code; their fused fast paths are not taken while the input requires a gradient)
TORCH_FORWARD_CODE = (nn.TransformerEncoderLayer, nn.TransformerEncoder)


def _qualified_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def is_pass_through(module: nn.Module) -> bool:
    """Layers whose plain gradient is the LRP propagation and that hand values on unchanged (padding
    adds constants around them)."""
    return _known_base(module) in PASS_THROUGH or _qualified_name(module) in EVAL_IDENTITIES


def known_layer(module: nn.Module) -> bool:
    """``module`` is a layer the engine has a rule (or a plain-gradient treatment) for."""
    return _known_base(module) is not None


def _known_base(module: nn.Module) -> type | None:
    """The known layer type of ``module``, unless it is a subclass that overrides ``forward``."""
    if _qualified_name(module) in EVAL_IDENTITIES:
        return type(module)
    for base in KNOWN_LAYERS:
        if isinstance(module, base):
            return base if type(module).forward is base.forward else None
    return None


def _problem(module: nn.Module) -> str | None:
    """``None`` if ``module`` is a usable known layer, else a description (type name)."""
    base = _known_base(module)
    if base is None:
        return type(module).__name__
    if isinstance(module, BATCH_NORM) and not module.track_running_stats:
        return f"{type(module).__name__} without running statistics"
    if isinstance(module, nn.MultiheadAttention) and (module.bias_k is not None or module.add_zero_attn):
        return "MultiheadAttention with add_bias_kv or add_zero_attn"
    return None


def _is_container(module: nn.Module) -> bool:
    """Plain torch containers, or modules defined outside torch: their forward code (children, torch
    operations such as a TCN's ``Chomp1d`` slicing, a ViT's class token and position embedding) is
    checked operation by operation by :mod:`.dataflow`. Their own parameters are constants there:
    added or concatenated (a bias, a class token) or scaling (``x * self.gamma``); any other use
    (``F.conv2d(x, self.weight)``) has no rule and is reported."""
    if any(isinstance(module, base) and type(module).forward is base.forward for base in CONTAINERS + TORCH_FORWARD_CODE):
        return True
    # a subclass of a torch layer is not (its forward replaces the layer's); of a container it is (DenseNet's blocks)
    # a LayerNorm subclass with its own forward (ConvNeXt's LayerNorm2d: permute, F.layer_norm, permute) is
    # forward code too: its functional layer_norm gets the rule
    torch_layers = [base for base in type(module).__mro__ if base.__module__.startswith("torch.")
                    and base not in (nn.Module, object, *CONTAINERS, *LAYER_NORMS)]
    return not type(module).__module__.startswith("torch.") and not torch_layers


def unsupported_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(path, description)`` of every module the LRP engine cannot explain, in module order."""
    found: list[tuple[str, str]] = []

    def visit(path: str, module: nn.Module) -> None:
        if _known_base(module) is not None or not _is_container(module):
            problem = _problem(module)
            if problem is not None:
                found.append((path or "<model>", problem))
            return
        for name, child in module.named_children():
            visit(f"{path}.{name}" if path else name, child)

    visit("", model)
    return found


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` listing every unsupported module of ``model``."""
    found = unsupported_modules(model)
    if found:
        raise UnsupportedModelError(found)
