"""The audit configuration: one validated schema, errors that name the key.

A config file is YAML. Every section and key is optional; missing keys take the
defaults below, which are the values of ``configs/digits.yaml``. Unknown keys and
values of the wrong type fail before any work starts, naming the dotted key.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

CORNERS = ("bottom-left", "bottom-right", "top-left", "top-right")
NOISE_KINDS = ("symmetric", "asymmetric")


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


@dataclass
class ArtifactConfig:
    """A 'copyright tag' stamped into one corner of a fraction of one class's training images."""

    class_: int = 3
    fraction: float = 0.5
    corner: Literal["bottom-left", "bottom-right", "top-left", "top-right"] = "bottom-left"


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
    artifact: ArtifactConfig = field(default_factory=ArtifactConfig)
    label_noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)


@dataclass
class TrainingConfig:
    epochs: int = 25
    batch_size: int = 64
    learning_rate: float = 0.002
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"


@dataclass
class ExplainConfig:
    method: Literal["lrp"] = "lrp"
    composite: Literal["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"] = "epsilon_plus_flat"
    target: Literal["predicted", "label"] = "predicted"
    shard_size: int = 256
    batch_size: int = 128
    heatmap_dtype: Literal["float16", "float32"] = "float16"
    device: str = "auto"


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


@dataclass
class AuditConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    spray: SprayConfig = field(default_factory=SprayConfig)

    def with_seed(self, seed: int) -> "AuditConfig":
        """Every seed (data, noise, training, SpRAy) set to ``seed``."""
        out = from_dict(to_dict(self))
        out.dataset.seed = seed
        out.training.seed = seed
        out.spray.seed = seed
        return out


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
        return _check_value(value, args[0], where)
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
        if key in data:
            kwargs[f.name] = _check_value(data[key], hints[f.name], f"{where}.{key}" if where else key)
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
    elif isinstance(obj, ClusterConfig):
        for key in ("workers", "threads_per_worker"):
            if getattr(obj, key) < 1:
                fail(key, f"must be at least 1, got {getattr(obj, key)}")
    elif isinstance(obj, SprayConfig):
        if obj.n_neighbors < 2:
            fail("n_neighbors", f"must be at least 2, got {obj.n_neighbors}")
        if obj.max_clusters < 2:
            fail("max_clusters", f"must be at least 2, got {obj.max_clusters}")
        if obj.pool_size < 1:
            fail("pool_size", f"must be at least 1, got {obj.pool_size}")
        if obj.region_grid < 1:
            fail("region_grid", f"must be at least 1, got {obj.region_grid}")


def from_dict(data: dict | None) -> AuditConfig:
    """Validate a parsed config mapping; raises :class:`ConfigError` naming the bad key."""
    return _build(AuditConfig, data, "")


def to_dict(config: Any) -> dict:
    """The config as plain data, with YAML key names (``class``, not ``class_``)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[_key(f.name)] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def load_config(path: str | Path | None) -> AuditConfig:
    """Read and validate a YAML config; ``None`` gives the defaults (= configs/digits.yaml)."""
    if path is None:
        return AuditConfig()
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
