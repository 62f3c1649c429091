from pathlib import Path

import pytest
import yaml

from unhans.pipeline.config import AuditConfig, ConfigError, from_dict, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]


def test_configs_digits_yaml_equals_builtin_defaults():
    assert to_dict(load_config(REPO / "configs" / "digits.yaml")) == to_dict(AuditConfig())


def test_unknown_key_is_named_with_its_section():
    with pytest.raises(ConfigError, match=r"dataset\.artefact"):
        from_dict({"dataset": {"artefact": {}}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"training\.epochs: expected an integer"):
        from_dict({"training": {"epochs": "many"}})


def test_bad_choice_lists_the_choices():
    with pytest.raises(ConfigError, match=r"dataset\.artifact\.corner: 'middle' is not one of bottom-left"):
        from_dict({"dataset": {"artifact": {"corner": "middle"}}})


def test_out_of_range_fraction_is_rejected():
    with pytest.raises(ConfigError, match=r"dataset\.artifact\.fraction: must be in \[0, 1\]"):
        from_dict({"dataset": {"artifact": {"fraction": 1.5}}})


def test_missing_config_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_partial_config_keeps_other_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"dataset": {"artifact": {"class": 7}}}))
    config = load_config(path)
    assert config.dataset.artifact.class_ == 7
    assert config.dataset.artifact.corner == "bottom-left"
    assert config.training.epochs == AuditConfig().training.epochs


def test_with_seed_overrides_every_seed():
    config = AuditConfig().with_seed(4)
    assert (config.dataset.seed, config.training.seed, config.spray.seed) == (4, 4, 4)
    assert AuditConfig().dataset.seed == 0  # the original is untouched
