import pytest

from mmib.config import RunConfig, TrainConfig, apply_overrides, coerce_dataclass, dump_config, load_config, parse_value
from mmib.errors import ConfigError


def test_parse_value_handles_yaml_and_float_forms():
    assert parse_value("1e-3") == pytest.approx(1e-3)
    assert parse_value("3000") == 3000
    assert parse_value("true") is True
    assert parse_value("tensor") == "tensor"
    assert parse_value("[1, 2]") == [1, 2]


def test_overrides_route_bare_keys_and_sections():
    cfg = apply_overrides(RunConfig(), [
        "lr=3e-4", "seed=7", "n_samples=3000", "beta=1e-2", "model.encoders.audio=lstm", "data.seq_len=20",
        "train.clip_grad=5", "replace_nonfinite=true",
    ])
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.seed == 7 and cfg.train.clip_grad == 5.0
    assert cfg.data.options == {"seq_len": 20} and cfg.data.replace_nonfinite is True
    assert cfg.model.options == {"n_samples": 3000, "beta": 1e-2, "encoders": {"audio": "lstm"}}
    assert RunConfig().train.lr == 1e-3  # the original is untouched


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(RunConfig(), ["lr"])
    with pytest.raises(ConfigError, match=r"--set lr: expected a number"):
        apply_overrides(RunConfig(), ["lr=fast"])
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        apply_overrides(RunConfig(), ["train.epoch=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides(RunConfig(), ["epochs=2.5"])


def test_coerce_dataclass_rejects_unknown_options():
    with pytest.raises(ConfigError, match="unknown option 'batchsize'.*did you mean 'batch_size'"):
        coerce_dataclass(TrainConfig, {"batchsize": 3}, "train")
    assert coerce_dataclass(TrainConfig, {"clip_grad": "none"}, "train").clip_grad is None


def test_yaml_round_trip_and_errors(tmp_path):
    cfg = apply_overrides(RunConfig(), ["lr=0.01", "data.n_samples=100"])
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg
    (tmp_path / "bad.yaml").write_text("train: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "sec.yaml").write_text("optim: {}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(tmp_path / "sec.yaml")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
