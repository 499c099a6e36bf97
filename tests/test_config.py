import dataclasses

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
    assert RunConfig().train.lr == TrainConfig().lr  # the original is untouched


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


@pytest.mark.parametrize(("override", "message"), [
    ("lr=-1", "--set lr must be a finite number > 0, got -1.0"),
    ("text_lr=0", "--set text_lr must be a finite number > 0, got 0.0"),
    ("weight_decay=-1", "--set weight_decay must be a finite number >= 0, got -1.0"),
    ("clip_grad=-1", "--set clip_grad must be a finite number > 0 (or null for no clipping), got -1.0"),
    ("threads=-1", "--set threads must be an integer >= 1 (or null for PyTorch's default), got -1"),
    ("threads=0", "--set threads must be an integer >= 1 (or null for PyTorch's default), got 0"),
    ("eval_batch_size=0", "--set eval_batch_size must be an integer >= 1, got 0"),
    ("patience=0", "--set patience must be an integer >= 1, got 0"),
    ("epochs=-2", "--set epochs must be an integer >= 0, got -2"),
])
def test_out_of_range_training_values_are_refused_naming_the_option(override, message):
    import re

    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        apply_overrides(RunConfig(), [override])


def test_valid_edge_values_are_accepted():
    cfg = apply_overrides(RunConfig(), ["clip_grad=null", "threads=null", "weight_decay=0", "epochs=0", "lr=1e-9"])
    assert cfg.train.clip_grad is None and cfg.train.threads is None and cfg.train.epochs == 0


def test_yaml_configs_are_range_checked_too(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: -0.5\n")
    with pytest.raises(ConfigError, match=rf"^{p}: train.lr must be a finite number > 0, got -0.5$"):
        load_config(p)


@pytest.mark.parametrize("value", ["1.5", "1", "-0.1"])
def test_dropout_outside_0_1_is_refused_for_every_model(value):
    from mmib.models.registry import list_models, model_options

    for entry in list_models():
        if "dropout" in {f.name for f in dataclasses.fields(entry.cls.Options)}:
            with pytest.raises(ConfigError, match=rf"^model {entry.name}.dropout must lie in \[0, 1\), got "):
                model_options(entry.name, {"dropout": value})
    assert model_options("concat", {"dropout": "0.0"}).dropout == 0.0
