"""The configuration: one validated schema that is also the runtime spec.

A config file is YAML. Every section and key is optional; missing keys take the defaults
below (without ``input:``, the embedded digits of ``configs/digits.yaml``). Unknown keys and
values of the wrong type fail before any work starts, naming the dotted key.

The same dataclasses travel to the Dask workers: :class:`InputConfig` is opened by
:func:`unhans.pipeline.sources.open_source`, :class:`ModelConfig` built by
:func:`unhans.pipeline.model_loading.build_model`, each with its paths made absolute first
(:func:`unhans.pipeline.sources.absolute_input`, :func:`unhans.pipeline.model_loading.absolute_model`).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from unhans.explainers.registry import COMPOSITES, METHODS

CORNERS = ("bottom-left", "bottom-right", "top-left", "top-right")
NOISE_KINDS = ("symmetric", "asymmetric")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


@dataclass
class ArtifactConfig:
    """A shortcut planted into a fraction of one class's training images (see :mod:`.defects`).

    kind: ``stamp`` (the tag at a fixed ``corner``), ``moving`` (the tag anywhere), ``scaled``
    (the tag resized by 0.6-1.6 in the ``corner``), ``frame`` (a bright line along the ``edge``),
    ``texture`` (faint stripes over the background).
    """

    class_: int = 3
    fraction: float = 0.5
    corner: Literal["bottom-left", "bottom-right", "top-left", "top-right"] = "bottom-left"
    kind: Literal["stamp", "moving", "scaled", "frame", "texture"] = "stamp"
    edge: Literal["top", "bottom", "left", "right"] = "bottom"


@dataclass
class LabelNoiseConfig:
    """Label noise injected into the training labels (ground truth kept aside)."""

    rate: float = 0.1
    kind: Literal["symmetric", "asymmetric"] = "symmetric"


@dataclass
class DatasetConfig:
    name: Literal["digits"] = "digits"
    seed: int = 0
    image_size: int = 32
    test_fraction: float = 0.3
    artifact: ArtifactConfig | list[ArtifactConfig] = field(default_factory=ArtifactConfig)  # a list: several poisoned classes
    label_noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)

    @property
    def artifacts(self) -> list[ArtifactConfig]:
        """The planted artifacts, one or several (an empty fraction plants nothing)."""
        return list(self.artifact) if isinstance(self.artifact, list) else [self.artifact]


@dataclass
class TrainingConfig:
    architecture: Literal["cnn", "vit"] = "cnn"  # the embedded default's model: the small CNN or a small ViT
    epochs: int = 25
    batch_size: int = 64
    learning_rate: float = 0.002
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"


@dataclass
class ExplainConfig:
    method: Literal[METHODS] = "lrp"
    composite: Literal[COMPOSITES] = "epsilon_plus_flat"
    target: Literal["predicted", "label"] = "predicted"
    shard_size: int = 256
    batch_size: int = 128
    heatmap_dtype: Literal["float16", "float32"] = "float16"
    device: str = "auto"
    concepts: bool = False          # LRP only: also store per-channel relevance at concept_layer (outputs table)
    concept_layer: str = "auto"     # a module path of the model; auto = its last convolution
    latent_layer: str = "auto"      # whose channel profile the Clever-Hans search reads; auto = the middle convolution, none = off
    tsr: bool = False               # time series (features, time): Temporal Saliency Rescaling around method
    tsr_alpha: float = 0.5          # TSR: feature relevance only for steps above this share of the time-relevance range


@dataclass
class ClusterConfig:
    """The Dask cluster: a LocalCluster unless ``scheduler`` names an existing one."""

    scheduler: str | None = None
    workers: int = 2
    threads_per_worker: int = 1


@dataclass
class SprayConfig:
    pool_size: int = 8
    normalize: Literal["l2", "maxabs"] = "l2"
    relevance: Literal["positive", "signed"] = "positive"
    n_neighbors: int = 10
    max_clusters: int = 8
    region_grid: int = 4
    umap: bool = True
    seed: int = 0
    # counterfactual checks: "auto" = each detector's best classes and its outliers (unhans.spray.verdict);
    # "all" = every class's candidates (calibration; costs two model passes over 200 inputs per candidate)
    confirm: Literal["auto", "all"] = "auto"
    # the recurring-pattern search (seconds per class) runs on this many classes, those whose relevance is
    # most concentrated (unhans.spray.recurring_screen); every class when there are no more; 0 = every class
    recurring_classes: int = 32


@dataclass
class FaithfulnessConfig:
    """The audit's check of its own heatmaps (:mod:`unhans.explainers.explainer_check`) on a stratified
    subsample: region perturbation against a random ordering and the gradient, and cascading parameter
    randomization. ``region: 0`` = the input's shorter side / 8 (at least 1 pixel)."""

    enabled: bool = True
    samples: int = 256
    seed: int = 0
    region: int = 0
    steps: int = 8
    replacement: Literal["black", "mean", "blur", "inpaint"] = "blur"
    randomization: bool = True
    similarity_limit: float = 0.8


@dataclass
class ReportConfig:
    """``report.html``: ``top_k`` classes get the detailed section (flagged first, then the highest
    Clever-Hans scores); every class gets a row in the overview. May change between reruns."""

    top_k: int = 10


@dataclass
class TransformConfig:
    """How image files become tensors: resize to size x size, center crop, normalization."""

    size: int | None = None
    center_crop: int | None = None
    grayscale: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class InputConfig:
    """The user's samples (see :mod:`unhans.pipeline.sources`).

    kind: ``npy`` (images .npy + optional labels .npy), ``npz`` (arrays ``images_key`` and
    ``labels_key``), ``imagefolder`` (``path/<class>/<image>``, torchvision's ImageFolder order),
    ``parquet`` (a table with ``path_column`` and ``label_column``, paths relative to ``root`` or
    to the table's folder; ``key_column`` names a column of stable sample keys, else the path is
    the key). ``class_names`` overrides the names (folder names for an ImageFolder, indices else).
    """

    kind: Literal["npy", "npz", "imagefolder", "parquet"] = "npy"
    path: str | None = None
    labels_path: str | None = None
    images_key: str = "images"
    labels_key: str = "labels"
    path_column: str = "path"
    label_column: str = "label"
    key_column: str | None = None
    root: str | None = None
    class_names: list[str] | None = None
    transform: TransformConfig = field(default_factory=TransformConfig)


@dataclass
class ModelConfig:
    """The user's trained classifier (see :mod:`unhans.pipeline.model_loading`)."""

    kind: Literal["factory", "torchvision", "torchscript"] = "factory"
    factory: str | None = None
    name: str | None = None
    checkpoint: str | None = None
    kwargs: dict | None = None
    trust_checkpoint: bool = False
    search_path: str | None = None   # where ``factory`` modules are imported from besides sys.path (default: cwd)


@dataclass
class DynamicsConfig:
    """Training dynamics recorded in the user's own loop.

    ``trajectory``: the directory given as ``DynamicsRecorder(..., store=DIR)``. Without it, the
    mislabel evidence comes from the audited model alone (:mod:`unhans.spray.label_quality`).
    """

    trajectory: str | None = None


@dataclass
class AuditConfig:
    """``unhans audit``: the embedded digits (``dataset:``, trained here) or the user's ``input:`` + ``model:``."""

    dataset: DatasetConfig | None = None
    input: InputConfig | None = None
    model: ModelConfig | None = None
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    spray: SprayConfig = field(default_factory=SprayConfig)
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        if self.dataset is None and self.input is None:  # zero configuration: the embedded digits
            self.dataset = DatasetConfig()

    @property
    def embedded(self) -> bool:
        """True for the embedded digits (with its training stage), False for the user's input."""
        return self.input is None

    def with_seed(self, seed: int) -> "AuditConfig":
        """Every seed (data, noise, training, SpRAy) set to ``seed``."""
        out = from_dict(to_dict(self))
        if out.dataset is not None:
            out.dataset.seed = seed
        out.training.seed = seed
        out.spray.seed = seed
        return out


@dataclass
class ExplainRunConfig:
    """``unhans explain``: explain every sample of an input with a given model."""

    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


# Python field names that differ from the YAML key (``class`` is a keyword).
_ALIASES = {"class_": "class"}


def _key(name: str) -> str:
    return _ALIASES.get(name, name)


def _check_value(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        as_list = [a for a in args if get_origin(a) is list]
        if isinstance(value, list) and as_list:  # e.g. one artifact or a list of them
            return _check_value(value, as_list[0], where)
        return _check_value(value, [a for a in args if get_origin(a) is not list][0], where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = get_args(hint)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported schema type {hint!r} at {where}")  # a bug in the schema, not user input


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {_key(f.name): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {', '.join(prefix + k for k in unknown)} (allowed: {', '.join(fields)})"
        )
    kwargs = {}
    for key, f in fields.items():
        path = f"{where}.{key}" if where else key
        if key in data:
            kwargs[f.name] = _check_value(data[key], hints[f.name], path)
        elif dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], {}, path)  # a missing section is validated too
    obj = cls(**kwargs)
    _validate_ranges(obj, where)
    return obj


def _validate_ranges(obj: Any, where: str) -> None:
    def fail(key: str, msg: str) -> None:
        raise ConfigError(f"{where}.{key}: {msg}" if where else f"{key}: {msg}")

    if isinstance(obj, ArtifactConfig):
        if not 0.0 <= obj.fraction <= 1.0:
            fail("fraction", f"must be in [0, 1], got {obj.fraction}")
        if not 0 <= obj.class_ <= 9:
            fail("class", f"must be a digit class 0..9, got {obj.class_}")
    elif isinstance(obj, LabelNoiseConfig):
        if not 0.0 <= obj.rate < 1.0:
            fail("rate", f"must be in [0, 1), got {obj.rate}")
    elif isinstance(obj, DatasetConfig):
        classes = [a.class_ for a in obj.artifacts]
        if len(set(classes)) < len(classes):
            fail("artifact", f"one artifact per class, got classes {classes}")
        if obj.image_size < 8:
            fail("image_size", f"must be at least 8, got {obj.image_size}")
        if not 0.05 <= obj.test_fraction <= 0.9:
            fail("test_fraction", f"must be in [0.05, 0.9], got {obj.test_fraction}")
    elif isinstance(obj, TrainingConfig):
        for key in ("epochs", "batch_size"):
            if getattr(obj, key) < 1:
                fail(key, f"must be at least 1, got {getattr(obj, key)}")
        if obj.learning_rate <= 0:
            fail("learning_rate", f"must be positive, got {obj.learning_rate}")
    elif isinstance(obj, ExplainConfig):
        for key in ("shard_size", "batch_size"):
            if getattr(obj, key) < 1:
                fail(key, f"must be at least 1, got {getattr(obj, key)}")
        if obj.concepts and obj.method != "lrp":
            fail("concepts", f"needs method lrp (concept relevance is LRP's), got method {obj.method}")
        if obj.tsr and obj.concepts:
            fail("tsr", "cannot be combined with concepts (TSR rescales the input heatmap only)")
        if not 0 <= obj.tsr_alpha:
            fail("tsr_alpha", f"must be at least 0, got {obj.tsr_alpha}")
    elif isinstance(obj, ClusterConfig):
        for key in ("workers", "threads_per_worker"):
            if getattr(obj, key) < 1:
                fail(key, f"must be at least 1, got {getattr(obj, key)}")
    elif isinstance(obj, TransformConfig):
        for key in ("size", "center_crop"):
            if getattr(obj, key) is not None and getattr(obj, key) < 1:
                fail(key, f"must be at least 1, got {getattr(obj, key)}")
        if (obj.mean is None) != (obj.std is None):
            fail("mean" if obj.mean is None else "std", "mean and std go together")
        if obj.mean is not None:
            channels = 1 if obj.grayscale else 3
            for key in ("mean", "std"):
                if len(getattr(obj, key)) != channels:
                    fail(key, f"needs {channels} values (one per channel), got {len(getattr(obj, key))}")
            if any(v <= 0 for v in obj.std):
                fail("std", "values must be positive")
    elif isinstance(obj, InputConfig):
        if obj.path is None:
            fail("path", "required (the .npy/.npz file, image folder or Parquet table)")
    elif isinstance(obj, ModelConfig):
        needed = {"factory": "factory", "torchvision": "name", "torchscript": "checkpoint"}[obj.kind]
        if getattr(obj, needed) is None:
            fail(needed, f"required for model.kind {obj.kind!r}")
    elif isinstance(obj, AuditConfig):
        if obj.input is not None and obj.dataset is not None:
            raise ConfigError("dataset and input are mutually exclusive: dataset: is the embedded digits (trained "
                              "here), input: is your own data with your model; give one of them")
        if obj.input is not None and obj.model is None:
            fail("model", "required with input: (your trained classifier: kind, factory or name, checkpoint)")
        if obj.input is None and obj.model is not None:
            fail("model", "only with input: (the embedded dataset trains its own model)")
        if obj.input is None and obj.dynamics.trajectory is not None:
            fail("dynamics.trajectory", "only with input: (the embedded dataset records its own trajectory)")
    elif isinstance(obj, SprayConfig):
        if obj.n_neighbors < 2:
            fail("n_neighbors", f"must be at least 2, got {obj.n_neighbors}")
        if obj.max_clusters < 2:
            fail("max_clusters", f"must be at least 2, got {obj.max_clusters}")
        if obj.pool_size < 1:
            fail("pool_size", f"must be at least 1, got {obj.pool_size}")
        if obj.region_grid < 1:
            fail("region_grid", f"must be at least 1, got {obj.region_grid}")
    elif isinstance(obj, FaithfulnessConfig):
        for key in ("samples", "steps"):
            if getattr(obj, key) < 1:
                fail(key, f"must be at least 1, got {getattr(obj, key)}")
        if obj.region < 0:
            fail("region", f"must be 0 (auto) or a positive number of pixels, got {obj.region}")
        if not 0.0 < obj.similarity_limit <= 1.0:
            fail("similarity_limit", f"must be in (0, 1], got {obj.similarity_limit}")
    elif isinstance(obj, ReportConfig):
        if obj.top_k < 0:
            fail("top_k", f"must be at least 0, got {obj.top_k}")


def from_dict(data: dict | None, schema: type = AuditConfig):
    """Validate a parsed config mapping against ``schema``; raises :class:`ConfigError` naming the bad key."""
    return _build(schema, data, "")


def to_dict(config: Any) -> dict:
    """The config as plain data, with YAML key names (``class``, not ``class_``); absent sections are left out."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None and dataclasses.is_dataclass(_optional_section(type(config), f.name)):
            continue
        if isinstance(value, list):
            value = [to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[_key(f.name)] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def _optional_section(cls: type, name: str) -> Any:
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else None


def read_yaml(path: str | Path) -> dict:
    """A YAML file as a mapping; ConfigError naming the file if it is missing or not YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return data or {}


def load_config(path: str | Path | None, schema: type = AuditConfig):
    """Read and validate a YAML config; ``None`` gives the defaults (for the audit: configs/digits.yaml)."""
    if path is None:
        return schema() if schema is AuditConfig else from_dict({}, schema)
    try:
        return from_dict(read_yaml(path), schema)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from exc
