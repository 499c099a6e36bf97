"""The Python API's configuration step fails fast on names it cannot resolve."""

import pytest

from mmib.api import make_config
from mmib.errors import ConfigError


def test_unknown_model_and_option_fail_before_any_data_is_loaded(monkeypatch):
    def no_data(*args, **kwargs):  # pragma: no cover - reaching it is the failure
        raise AssertionError("data were loaded before the model name was checked")

    monkeypatch.setattr("mmib.api.load_dataset", no_data)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        make_config("nope", "sim-i")
    with pytest.raises(ConfigError, match="unknown option 'nonsense'"):
        make_config("c-mib", "sim-i", overrides=["model.nonsense=1"])
    cfg = make_config("c-mib", "sim-i", overrides=["beta=0.01"])
    assert cfg.model.name == "c-mib" and cfg.model.options["beta"] == 0.01
    with pytest.raises(ConfigError, match=r"dataset 'sim-anomaly' has no option 'mdoe' \(did you mean 'mode'\?\)"):
        make_config("concat", "sim-anomaly", overrides=["data.mdoe=scale"])
    cfg = make_config("concat", "sim-anomaly", data_options={"mode": "class", "select": ["a0"]})
    assert cfg.data.options == {"mode": "class", "select": ["a0"]}


def test_a_complete_config_keeps_the_users_training_options_through_train(tmp_path, tiny_msa):
    """compare and sweep pass their planned RunConfig to train(): a model's training default
    (MMIM's weight decay 1e-4) must not overwrite the user's weight_decay=0 there."""
    from mmib.api import train
    from mmib.config import RunConfig, load_config

    cfg = make_config("mmim", "sim-msa", overrides=["weight_decay=0"], epochs=0, progress=False)
    assert cfg.train.weight_decay == 0.0
    train(config=RunConfig.from_dict(cfg.to_dict()), out=tmp_path / "run", dataset=tiny_msa)
    assert load_config(tmp_path / "run" / "config.yaml").train.weight_decay == 0.0
    assert make_config("mmim", "sim-msa").train.weight_decay == 1e-4


def test_train_refuses_a_dataset_name_given_as_the_loaded_dataset():
    """A name belongs in data=; dataset= takes a loaded MultimodalDataset (it failed with an AttributeError)."""
    from mmib.api import train

    with pytest.raises(ConfigError, match=r"dataset: expected a loaded MultimodalDataset, got str 'sim-msa'.*data="):
        train(model="concat", dataset="sim-msa")
