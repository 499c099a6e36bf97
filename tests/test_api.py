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
