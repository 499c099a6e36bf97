"""Per-model, per-dataset presets: layering, precedence of what the user set, provenance, validation."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

import mmib.presets as presets
from mmib.api import make_config, train
from mmib.config import RunConfig, TrainConfig, dump_config, load_config
from mmib.errors import ConfigError
from mmib.models.registry import get_model, list_models


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    """A preset folder in place of the package's own: shared recipe + a c-mib recipe."""
    (tmp_path / "default.yaml").write_text(yaml.safe_dump({
        "*": {"train": {"optimizer": "adamw", "weight_decay": 0.01}},
        "sim-msa": {"train": {"lr": 3e-4}, "model": {"encoder": "mlp"}},
    }))
    (tmp_path / "c-mib.yaml").write_text(yaml.safe_dump({
        "*": {"model": {"ib_hidden": 64}},
        "sim-msa": {"train": {"lr": 2e-4, "patience": 4}, "model": {"encoders": {"audio": "mlp"}}},
    }))
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    return tmp_path


def test_presets_layer_default_then_model_then_dataset(preset_dir):
    cfg = make_config("c-mib", "sim-msa")
    assert cfg.train.optimizer == "adamw" and cfg.train.weight_decay == 0.01
    assert cfg.train.lr == 2e-4 and cfg.train.patience == 4  # the model's dataset entry wins over default.yaml's
    assert cfg.model.options == {"encoder": "mlp", "ib_hidden": 64, "encoders": {"audio": "mlp"}}
    assert cfg.preset.resolved_for == ["c-mib", "sim-msa"]
    assert [s.split("#")[1] for s in cfg.preset.sources] == ["*", "sim-msa", "*", "sim-msa"]
    assert cfg.preset.applied["train.lr"] == 2e-4 and cfg.preset.applied["model.encoders.audio"] == "mlp"
    other = make_config("c-mib", "sim-i")  # only the "*" entries match another dataset
    assert other.train.lr == TrainConfig().lr and other.model.options == {"ib_hidden": 64}
    # a shared recipe's model option reaches only the models that have it
    assert "encoder" not in make_config("linear", "sim-msa").model.options


def test_what_the_user_sets_always_wins(preset_dir, tmp_path):
    cfg = make_config("c-mib", "sim-msa", overrides=["lr=1e-3", "model.encoders.audio=lstm", "ib_hidden=32"], patience=9)
    assert cfg.train.lr == 1e-3 and cfg.train.patience == 9  # lr equals TrainConfig's default: still explicit
    assert cfg.model.options["encoders"] == {"audio": "lstm"} and cfg.model.options["ib_hidden"] == 32
    assert "train.lr" not in cfg.preset.applied and "train.weight_decay" in cfg.preset.applied
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "c-mib", "options": {"encoder": "lstm"}},
                                    "train": {"optimizer": "adam"}}))
    cfg = make_config(config=path, data="sim-msa")
    assert cfg.train.optimizer == "adam" and cfg.model.options["encoder"] == "lstm" and cfg.train.lr == 2e-4
    off = make_config("c-mib", "sim-msa", overrides=["preset.use=false"])
    assert off.train.lr == TrainConfig().lr and off.model.options == {} and off.preset.applied == {}


def test_resolution_is_stable_through_the_config_file_and_follows_a_change_of_model(preset_dir, tmp_path):
    cfg = make_config("c-mib", "sim-msa", overrides=["lr=5e-3"])
    again = make_config(config=RunConfig.from_dict(yaml.safe_load(dump_config(cfg))))
    assert again == cfg  # what compare workers and --resume rebuild is the same configuration
    base = make_config(data="sim-msa", epochs=3)  # the demo's pattern: a base for one model ...
    moved = make_config("e-mib", config=base)  # ... reused for another: c-mib's recipe must not stay
    assert moved.model.options == {"encoder": "mlp"} and moved.train.lr == 3e-4 and moved.train.epochs == 3
    assert "model.ib_hidden" not in moved.preset.applied and moved.preset.resolved_for == ["e-mib", "sim-msa"]


def test_the_run_directory_records_the_preset_and_its_source(preset_dir, tmp_path):
    out = tmp_path / "run"
    train(model="concat", data="sim-msa", out=out, epochs=1, progress=False,
          data_options={"n_train": 100, "n_valid": 30, "n_test": 30})
    saved = load_config(out / "config.yaml")
    assert saved.train.optimizer == "adamw" and saved.model.options["encoder"] == "mlp"
    assert saved.preset.sources[0].endswith("default.yaml#*") and saved.preset.applied["train.lr"] == 3e-4


@pytest.mark.parametrize("content, match", [
    ("[1, 2]", "mapping of dataset names"),
    ("sim-msa: {optim: {lr: 1}}", "unknown section"),
    ("'*': {train: {no_such_field: 1}}", "no_such_field"),
    ("'*': {train: {lr: [", "not valid YAML"),
])
def test_a_broken_preset_file_is_an_error_naming_it(preset_dir, content, match):
    (preset_dir / "concat.yaml").write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        make_config("concat", "sim-msa")
    assert "concat.yaml" in str(info.value)


def test_every_builtin_preset_file_is_valid():
    hints = typing.get_type_hints(TrainConfig)
    names = {e.name for e in list_models()}
    files = list(presets.preset_files())
    assert any(p.name == presets.DEFAULT_FILE for p in files)
    for path in files:
        model = path.stem
        assert model == "default" or model in names, f"{path.name}: no registered model {model!r}"
        for dataset, values in presets._read(path).items():
            for key in values:
                section, _, rest = key.partition(".")
                if section == "train":
                    assert rest in hints, f"{path.name}: {dataset}: {key}"
                elif model != "default":
                    options = {f.name for f in dataclasses.fields(get_model(model).cls.Options)}
                    assert rest.split(".")[0] in options, f"{path.name}: {dataset}: {key}"


def test_models_verbose_shows_the_defaults_a_model_gets_on_a_dataset(preset_dir, capsys):
    from mmib.cli import main

    assert main(["models", "-v", "--models", "c-mib", "-d", "sim-msa"]) == 0
    out = capsys.readouterr().out
    builtin = get_model("c-mib").cls.Options().ib_hidden
    assert f"ib_hidden = 64    (preset; built-in default {builtin!r})" in out
    assert "encoders = {'audio': 'mlp'}    (preset; built-in default {})" in out
    assert "lr=0.0002" in out and "optimizer='adamw'" in out and "default.yaml#*" in out
    assert main(["models", "-v", "--models", "c-mib"]) == 0  # without a dataset: the entries for every dataset
    out = capsys.readouterr().out
    assert f"ib_hidden = 64    (preset; built-in default {builtin!r})" in out
    assert "encoders = {}" in out and "optimizer='adamw'" in out and "lr=" not in out


def test_a_resolved_config_keeps_a_user_value_equal_to_the_builtin_default(preset_dir):
    """compare and sweep hand their planned RunConfig to train(): weight_decay=0 set by the user (the
    built-in default) must not be refilled with the preset's 0.01 there."""
    cfg = make_config("c-mib", "sim-msa", overrides=["weight_decay=0"])
    assert cfg.train.weight_decay == 0.0 and "train.weight_decay" not in cfg.preset.applied
    again = make_config(config=RunConfig.from_dict(yaml.safe_load(dump_config(cfg))))
    assert again.train.weight_decay == 0.0 and again == cfg
    overridden = make_config(config=cfg, overrides=["lr=0.5"])  # a later override still wins over the preset
    assert overridden.train.lr == 0.5 and "train.lr" not in overridden.preset.applied


def test_the_builtin_sim_msa_presets_weigh_the_per_modality_task_losses_down():
    """C-MIB and L-MIB lose to linear on sim-msa with eq. 21's unimodal weights (see mmib/presets/c-mib.yaml);
    the built-in presets apply there only, and preset.use=false gives the paper's weights back."""
    assert make_config("c-mib", "sim-msa").model.options["unimodal_task_weight"] == 0.0
    assert make_config("l-mib", "sim-msa").model.options["unimodal_task_weight"] == 0.1
    assert "unimodal_task_weight" not in make_config("c-mib", "sim-i").model.options
    assert "unimodal_task_weight" not in make_config("c-mib", "sim-msa", overrides=["preset.use=false"]).model.options


def test_the_builtin_late_preset_gives_late_fusion_lstms_on_sim_msa_small_only():
    """Late fusion's per-modality heads do better on LSTM summaries of sim-msa-small's sequences (see
    mmib/presets/late.yaml); elsewhere, and for the fused models, the masked-mean default stays."""
    assert make_config("late", "sim-msa-small").model.options["encoder"] == "lstm"
    assert "encoder" not in make_config("late", "sim-msa").model.options
    assert "encoder" not in make_config("concat", "sim-msa-small").model.options
    assert make_config("late", "sim-msa-small", overrides=["model.encoder=mlp"]).model.options["encoder"] == "mlp"
