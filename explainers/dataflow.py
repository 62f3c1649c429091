"""The data flow of one forward pass: which layer or operation produced each tensor, and who read it.

Module inspection (:mod:`.support`) sees the layers but not the forward code that wires them.
At its first explanation the LRP engine therefore runs the model once on one sample, records
every call of a known layer (module hooks) and every torch operation applied in forward code
(a thread-local ``TorchFunctionMode``), and links each call to the calls that produced its
input-dependent inputs. From that record (:func:`trace`) it derives:

- **BatchNorm folding by data flow**: a BatchNorm whose input is the output of a Linear/Conv
  that nothing else reads is merged into it (:mod:`.canonizers`). Registration order plays no
  role, so DenseNet's pre-activation BatchNorms (which read a concatenation) stay unfolded.
- **The first layers**: the Linear/Conv layers that read the model input (through reshapes,
  padding and identity layers at most) get the first-layer rule, whose input gradient is already
  relevance: the first to run, and any other affine reader of the input, such as the 1×1
  down-sampling convolution of a TCN's first residual block. Every reader of the input must be
  one of them, each running once (an input read by anything else — ``x + f(x)`` — is refused).
- **Gates**: a Sigmoid/Hardsigmoid module whose output multiplies another input-dependent
  tensor (squeeze-excitation, as in MobileNetV3 and EfficientNet) is a gate; the engine
  treats its value as a constant weight (:class:`.parameter_free_rules.Gate`).
- **Forward code without an LRP rule**: operations that are linear without bias (``+``,
  ``cat``, ``mean``, average pooling, reshapes, scaling by a constant) are explained by their
  plain gradient, which *is* the LRP-0/Norm propagation ``R_j = x_j ∂y_k/∂x_j / y_k · R_k``,
  and ReLU and max pooling by theirs (Pass, winner-takes-all); residual additions such as
  torchvision ResNet's ``out += identity`` are therefore explained correctly.
- **Forward code with an AttnLRP rule** (:mod:`.attention_rules`): products of two or more
  input-dependent tensors other than a gate (``q @ kᵀ``, ``a * b``: uniform rule), softmax
  (its gradient is AttnLRP's rule) unless it produces the model output (LRP explains logits),
  ``scaled_dot_product_attention``, functional element-wise activations (identity rule),
  ``layer_norm``/``rms_norm`` (σ constant) and ``F.linear`` with constant weights. The
  explainer then runs the forward pass in :class:`.attention_rules.AttnLRPMode`.
  Any other operation (``exp``, ``abs``, division by an input-dependent tensor, …) would be a
  silent gradient fall back, so it is reported as :class:`UnsupportedModelError`.

Data-dependent control flow is assumed to take the same path for every sample.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .attention_rules import explained_by_attnlrp
from .dependence import dependent
from .errors import UnsupportedModelError
from .support import AFFINE, AVG_POOL, BATCH_NORM, GATES, is_pass_through, known_layer

#: shape and bookkeeping operations: the gradient routes relevance unchanged
_STRUCTURAL = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute", "transpose", "t",
    "squeeze", "unsqueeze", "contiguous", "clone", "expand", "expand_as", "__getitem__", "narrow",
    "select", "chunk", "split", "unbind", "cat", "concat", "concatenate", "stack", "hstack", "vstack",
    "repeat", "flip", "movedim", "swapaxes", "to", "float", "double", "half", "bfloat16", "type_as",
    "dropout", "pad", "roll",
}  # fmt: skip
#: bias-free linear maps (gradient = LRP-0) and winner-takes-all / ReLU (gradient = Pass)
_LINEAR = {
    "add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_",
    "neg", "__neg__", "sum", "mean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_avg_pool2d", "adaptive_avg_pool3d", "interpolate", "relu", "relu_", "max_pool1d",
    "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "amax",
}  # fmt: skip
#: linear only while at most one operand depends on the input (and never the divisor)
_PRODUCTS = {"mul", "__mul__", "__rmul__", "__imul__", "mul_"}
_SCALING = _PRODUCTS | {"matmul", "__matmul__", "mm", "bmm", "einsum"}
_DIVISION = {"div", "__truediv__", "__itruediv__", "div_", "true_divide"}
_UNKNOWN = -1


def _explained_by_gradient(name: str, args: tuple, kwargs: dict) -> bool:
    if name in _STRUCTURAL or name in _LINEAR or name.endswith("__get__"):
        return True
    if name in _SCALING:
        return len(dependent((args, kwargs))) <= 1
    if name in _DIVISION:
        return len(args) > 1 and not dependent(args[1:]) and not dependent(kwargs)
    return False


@dataclass
class Call:
    """One recorded call: the model input, a known layer, an operation in forward code, or the output."""

    name: str  # module path, or path of the module whose forward code ran the operation
    module: nn.Module | None = None
    operation: str | None = None
    sources: list[int] = field(default_factory=list)  # calls that produced the dependent inputs
    readers: list[int] = field(default_factory=list)  # calls that read the output
    explained: bool = True
    ndim: int | None = None  # of the (first) output
    shape: tuple[int, ...] | None = None  # of the (first) output, for the traced sample
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)  # of the input-dependent inputs
    attnlrp: bool = False  # an operation AttnLRP has a rule for (see .attention_rules), if nothing else explains it


@dataclass
class DataFlow:
    """What the LRP engine needs from the data flow (see the module docstring)."""

    first: nn.Module | None
    folds: list[tuple[nn.Module, nn.Module]]
    gates: list[nn.Module]
    relu_fed: list[nn.Module]  # Linear/Conv whose output only a ReLU reads (see rules.AffineRule.relu_fed)
    calls: list[Call]
    #: (average pooling, nn.Linear, pooling input shape of one sample) pairs worth merging
    pool_folds: list[tuple[nn.Module, nn.Linear, tuple[int, ...]]] = field(default_factory=list)
    #: other Linear/Conv layers that read the model input, with the first-layer rule too
    also_first: list[nn.Module] = field(default_factory=list)
    #: forward code needs AttnLRP's operation rules (:class:`.attention_rules.AttnLRPMode`)
    attnlrp: bool = False


def _strip(path: str) -> str:
    """Path in the user's model (the LRP copy wraps it as ``nn.Sequential(model)``)."""
    return path[2:] if path.startswith("0.") else ("<model>" if path in ("0", "") else path)


class _Recorder(TorchFunctionMode):
    """Records known-layer calls (via hooks) and input-dependent torch calls of forward code."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = [Call("<input>")]
        self.producer: dict[int, int] = {}
        self.alive: list[Tensor] = []  # keeps recorded tensors alive, so their ids stay unique
        self.paths: list[str] = ["<model>"]
        self.depth = 0

    def add(self, call: Call, inputs: object, outputs: object) -> int:
        index = len(self.calls)
        read = dependent(inputs)
        call.sources = [self.producer.get(id(t), _UNKNOWN) for t in read]
        call.input_shapes = [tuple(t.shape) for t in read]
        for source in call.sources:
            if source != _UNKNOWN:
                self.calls[source].readers.append(index)
        produced = dependent(outputs)
        call.ndim = produced[0].ndim if produced else None
        call.shape = tuple(produced[0].shape) if produced else None
        for tensor in produced:
            self.producer[id(tensor)] = index
            self.alive.append(tensor)
        self.calls.append(call)
        return index

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth == 0 and dependent(out):
            name = getattr(func, "__name__", repr(func))
            explained = _explained_by_gradient(name, args, kwargs)
            attnlrp = not explained and explained_by_attnlrp(name, args, kwargs)
            self.add(Call(self.paths[-1], operation=name, explained=explained, attnlrp=attnlrp), (args, kwargs), out)
        return out


def _record(model: nn.Module, sample: Tensor) -> list[Call]:
    """Run ``model`` on ``sample`` and return the calls, in execution order."""
    recorder = _Recorder()
    handles = []

    def hooks(path: str, known: bool):
        def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if known:
                recorder.depth += 1
            else:
                recorder.paths.append(_strip(path))

        def after(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            if not known:
                recorder.paths.pop()
                return
            recorder.depth -= 1
            if recorder.depth == 0:
                recorder.add(Call(_strip(path), module=module), (args, kwargs), output)

        return before, after

    try:
        for path, module in model.named_modules():
            if path:
                before, after = hooks(path, known_layer(module))
                handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
                handles.append(module.register_forward_hook(after, with_kwargs=True))
        with torch.inference_mode(False), torch.enable_grad():
            inputs = sample.detach().clone().requires_grad_(True)
            recorder.producer[id(inputs)] = 0
            recorder.alive.append(inputs)
            with recorder:
                output = model(inputs)
            recorder.add(Call("<output>"), output, None)
    finally:
        for handle in handles:
            handle.remove()
    return recorder.calls


def _transparent(call: Call) -> bool:
    """Calls that hand their single input on unchanged in value (reshapes, identity layers)."""
    if len(call.sources) != 1:
        return False
    if call.operation is not None:
        return call.operation in _STRUCTURAL
    return call.module is not None and is_pass_through(call.module)


def _origin(calls: list[Call], index: int) -> int:
    """Follow transparent calls back to the call that computed the value."""
    while index != _UNKNOWN and _transparent(calls[index]):
        index = calls[index].sources[0]
    return index


def _final_readers(calls: list[Call], index: int, through: frozenset[int] = frozenset()) -> list[int]:
    """The readers of a value, looking through transparent calls (and the calls in ``through``)."""
    found = []
    for reader in calls[index].readers:
        look = _transparent(calls[reader]) or reader in through
        found += _final_readers(calls, reader, through) if look else [reader]
    return found


_IN_PLACE = re.compile(r"^(?!__).*[^_]_$|^__i(add|sub|mul|truediv|floordiv|mod|pow|matmul|and|or|xor|lshift|rshift)__$")


def _writes_in_place(call: Call) -> bool:
    if call.operation is not None:
        return bool(_IN_PLACE.match(call.operation))
    return getattr(call.module, "inplace", False) is True


def _find_gates(calls: list[Call]) -> tuple[list[nn.Module], list[tuple[str, str]]]:
    """Mark products ``features ⊙ gate`` as explained; return the gate modules and misused gates."""
    gate_calls: dict[int, list[int]] = {}  # gate call -> products it gates
    for index, call in enumerate(calls):
        if call.operation in _PRODUCTS and not call.explained and len(call.sources) == 2:
            origins = [_origin(calls, source) for source in call.sources]
            gated = [o for o in origins if o != _UNKNOWN and isinstance(calls[o].module, GATES)]
            if len(gated) == 1:
                call.explained = True
                gate_calls.setdefault(gated[0], []).append(index)
    gates: list[nn.Module] = []
    misused: list[tuple[str, str]] = []
    gate_modules = {id(calls[g].module) for g in gate_calls}
    for index, call in enumerate(calls):
        if call.module is None or id(call.module) not in gate_modules:
            continue
        if any(reader not in gate_calls.get(index, []) for reader in _final_readers(calls, index)):
            entry = (call.name, f"{type(call.module).__name__} used both as a gate and as an activation")
            if entry not in misused:
                misused.append(entry)
        elif call.module not in gates:
            gates.append(call.module)
    return gates, misused


def _first_layer(calls: list[Call]) -> tuple[nn.Module | None, list[nn.Module]]:
    """The first Linear/Conv to run and the other affine readers of the model input; checks that
    they alone read it, each once."""
    runs = [index for index, call in enumerate(calls) if isinstance(call.module, AFFINE)]
    if not runs:
        return None, []
    first = calls[runs[0]]
    readers = _final_readers(calls, 0)
    problems = []
    if runs[0] not in readers:
        source = first.sources[0] if first.sources else _UNKNOWN
        origin = calls[_origin(calls, source)].name if source != _UNKNOWN else "an unknown value"
        problems.append((first.name, f"reads {origin}, not the model input"))
    also: list[nn.Module] = []
    for reader in readers:
        call = calls[reader]
        if not isinstance(call.module, AFFINE) or len(call.sources) != 1:
            what = type(call.module).__name__ if call.module is not None else f"functional {call.operation}"
            problems.append((call.name, f"{what} reads the model input besides {first.name}"))
        elif sum(calls[i].module is call.module for i in runs) != 1:
            problems.append((call.name, "runs more than once"))
        elif reader != runs[0] and call.module not in also:
            also.append(call.module)
    if problems:
        raise UnsupportedModelError(
            problems, "the Linear/Conv layers that read the input get the first-layer rule and must be its only readers"
        )
    return first.module, also


def _run_counts(calls: list[Call]) -> dict[int, int]:
    """How often each module (by id) ran in the traced forward pass."""
    runs: dict[int, int] = {}
    for call in calls:
        if call.module is not None:
            runs[id(call.module)] = runs.get(id(call.module), 0) + 1
    return runs


def _out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _folds(calls: list[Call]) -> list[tuple[nn.Module, nn.Module]]:
    """``(layer, batch_norm)`` pairs where the BatchNorm is the only reader of the layer's output."""
    runs = _run_counts(calls)
    pairs = []
    for index, call in enumerate(calls):
        norm = call.module
        if not isinstance(norm, BATCH_NORM) or runs[id(norm)] != 1 or len(call.sources) != 1:
            continue
        source = call.sources[0]
        layer = calls[source].module if source > 0 else None
        if (
            isinstance(layer, AFFINE)
            and runs[id(layer)] == 1
            and calls[source].readers == [index]
            and norm.num_features == _out_features(layer)
            and (not isinstance(layer, nn.Linear) or calls[source].ndim == 2)
        ):
            pairs.append((layer, norm))
    return pairs


def _relu_fed(calls: list[Call], folds: list[tuple[nn.Module, nn.Module]]) -> list[nn.Module]:
    """Linear/Conv layers (run once) whose output is read by one ReLU and written by nothing else."""
    folded = frozenset(i for i, call in enumerate(calls) if any(call.module is norm for _, norm in folds))
    runs = _run_counts(calls)
    found = []
    for index, call in enumerate(calls):
        if not isinstance(call.module, AFFINE) or runs[id(call.module)] != 1:
            continue
        readers = _final_readers(calls, index, folded)
        if len(readers) != 1:
            continue
        relu = calls[readers[0]]
        if not (type(relu.module) is nn.ReLU or relu.operation in ("relu", "relu_")):
            continue
        # the value, its views and (if the ReLU wrote in place) the ReLU's output: nothing may write them
        chain = [index, *_views(calls, index, folded), readers[0], *_views(calls, readers[0], folded)]
        if not any(_writes_in_place(calls[r]) for c in chain for r in calls[c].readers if r != readers[0]):
            found.append(call.module)
    return found


#: operations that only reshape a value into (B, features) in logical order
_FLATTENING = {"view", "reshape", "flatten", "contiguous"}


def _pool_folds(calls: list[Call], first: nn.Module | None) -> list[tuple[nn.Module, nn.Linear, tuple[int, ...]]]:
    """Average poolings that only feed, through flattening, an nn.Linear, and enlarge their input.

    Typical: torchvision VGG's ``AdaptiveAvgPool2d((7, 7))`` on feature maps smaller than 7×7
    (inputs below 224×224) replicates each value into up to 49 positions, and the first
    classifier layer reads all of them. Merging the pooling into the layer's weights (see
    :func:`.canonizers.fold_average_pools`) gives an equivalent layer with up to 49× fewer
    weights to read in the forward and backward pass.
    """
    runs = _run_counts(calls)
    found = []
    for index, call in enumerate(calls):
        pool = call.module
        if not isinstance(pool, AVG_POOL) or runs[id(pool)] != 1 or len(call.sources) != 1:
            continue
        if call.shape is None or len(call.input_shapes) != 1:
            continue
        in_shape = call.input_shapes[0]
        readers = _final_readers(calls, index)
        if len(readers) != 1:
            continue
        linear = calls[readers[0]]
        path = _views(calls, index, frozenset())
        if (
            type(linear.module) is nn.Linear
            and linear.module is not first
            and runs[id(linear.module)] == 1
            and len(linear.sources) == 1
            and calls[linear.sources[0]].ndim == 2
            and all(
                calls[i].operation in _FLATTENING or (calls[i].module is not None and is_pass_through(calls[i].module))
                for i in path
            )
            and math.prod(in_shape[1:]) < math.prod(call.shape[1:]) == linear.module.in_features
        ):
            found.append((pool, linear.module, in_shape[1:]))
    return found


def _views(calls: list[Call], index: int, through: frozenset[int]) -> list[int]:
    """Transparent (and ``through``) calls between a value and its final readers."""
    found = []
    for reader in calls[index].readers:
        if _transparent(calls[reader]) or reader in through:
            found += [reader, *_views(calls, reader, through)]
    return found


def trace(model: nn.Module, sample: Tensor) -> DataFlow:
    """Record ``model``'s data flow on ``sample`` (one sample suffices) and analyse it.

    Raises :class:`UnsupportedModelError` for forward code without an LRP rule and for a first
    layer that does not (alone) read the input. ``model`` is left as it was (hooks removed).
    """
    calls = _record(model, sample)
    gates, offenders = _find_gates(calls)
    attnlrp = False
    for index, call in enumerate(calls):
        if call.operation in ("softmax", "log_softmax") and len(calls) - 1 in _final_readers(calls, index):
            offenders.append((call.name, f"functional {call.operation} on the model output: LRP explains logits"))
        elif not call.explained and call.attnlrp:
            call.explained = attnlrp = True
    for call in calls:
        if not call.explained:
            entry = (call.name, f"functional {call.operation}")
            if entry not in offenders:
                offenders.append(entry)
    if offenders:
        raise UnsupportedModelError(offenders, "operations without an LRP rule in forward code")
    folds = _folds(calls)
    first, also_first = _first_layer(calls)
    return DataFlow(
        first=first, folds=folds, gates=gates, relu_fed=_relu_fed(calls, folds), calls=calls,
        pool_folds=_pool_folds(calls, first), also_first=also_first, attnlrp=attnlrp,
    )  # fmt: skip
