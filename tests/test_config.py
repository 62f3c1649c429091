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


def test_method_and_composite_choices_come_from_the_explainer_registry():
    from unhans.explainers.composites import COMPOSITES
    from unhans.explainers.registry import COMPOSITES as REGISTERED_COMPOSITES
    from unhans.explainers.registry import METHODS, explainer_class

    assert tuple(COMPOSITES) == REGISTERED_COMPOSITES
    for method in METHODS:
        assert from_dict({"explain": {"method": method}}).explain.method == method
        assert callable(explainer_class(method))
    with pytest.raises(ConfigError, match=r"explain\.method: 'saliency' is not one of lrp"):
        from_dict({"explain": {"method": "saliency"}})


def test_input_and_dataset_are_mutually_exclusive_and_input_needs_a_model():
    with pytest.raises(ConfigError, match="mutually exclusive"):
        from_dict({"dataset": {}, "input": {"path": "x"}, "model": {"factory": "m:f"}})
    with pytest.raises(ConfigError, match=r"model: required with input"):
        from_dict({"input": {"path": "x"}})
    with pytest.raises(ConfigError, match=r"dynamics\.trajectory: only with input"):
        from_dict({"dynamics": {"trajectory": "d"}})
    user = from_dict({"input": {"kind": "imagefolder", "path": "x"}, "model": {"name": "resnet18", "kind": "torchvision"}})
    assert not user.embedded and user.dataset is None and "dataset" not in to_dict(user)
    assert from_dict({}).embedded and from_dict({}).dataset is not None


def test_the_config_is_the_runtime_spec_that_workers_receive():
    import pickle

    from unhans.pipeline.stages.explain import ExplainJob

    user = from_dict({"input": {"kind": "npy", "path": "x.npy"}, "model": {"factory": "m:f"}})
    job = ExplainJob(run_dir="/r", input=user.input, model=user.model, explain=user.explain)
    assert pickle.loads(pickle.dumps(job)) == job and job.input is user.input
