import json
import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mmib.config import RunConfig, TrainConfig
from mmib.data.dataset import DatasetSpec, MultimodalDataset, TaskSpec
from mmib.models import build_model
from mmib.models.base import ModelOutput, MultimodalModel, Objective, Phase, Stage, task_loss
from mmib.train import rundir
from mmib.train.engine import Trainer, TrainingDiverged


def _regression_data(n=64, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = x @ torch.randn(d, generator=g)
    return MultimodalDataset("lin", {"x": x}, y, TaskSpec("regression"),
                             {"train": range(0, 40), "valid": range(40, 52), "test": range(52, n)})


class WorseningModel(MultimodalModel):
    """Predicts a constant that moves away from the target by one each epoch."""

    @dataclass
    class Options:
        pass

    def __init__(self, spec, options=None):
        super().__init__(spec, options or self.Options())
        self.lin = nn.Linear(spec.modalities[0].dim, 1)
        self.register_buffer("epochs_seen", torch.zeros(()))

    def forward(self, batch):
        x = batch.features["x"]
        return ModelOutput(self.lin(x).squeeze(-1) * 0 + batch.y.new_full((len(batch),), 100.0) + self.epochs_seen
                           if batch.y is not None else self.lin(x).squeeze(-1) * 0 + 100.0 + self.epochs_seen)

    def objective(self, batch, phase, stage):
        loss = self.lin(batch.features["x"]).pow(2).mean()
        return Objective(loss, {"reg": loss})

    def on_epoch_end(self, epoch, phase):
        self.epochs_seen += 1
        return {"epochs_seen": float(self.epochs_seen)}


def test_early_stopping_restores_best_epoch(tmp_path):
    ds = _regression_data()
    model = WorseningModel(ds.spec)
    cfg = TrainConfig(epochs=20, patience=3, progress=False, batch_size=16)
    result = Trainer(model, ds, cfg, tmp_path / "run").fit()
    # validation MAE grows every epoch: best is epoch 1, stop after patience more
    assert result.best_epoch == 1 and result.results["epochs_run"] == 4
    assert float(model.epochs_seen) == 1.0  # buffers restored with the best weights
    rows = rundir.read_jsonl(tmp_path / "run" / rundir.METRICS)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["model"]["epochs_seen"] == 1.0 and "reg" in rows[0]["train"] and "mae" in rows[0]["valid"]
    assert not (tmp_path / "run" / rundir.CHECKPOINT).exists()
    results = json.loads((tmp_path / "run" / rundir.RESULTS).read_text())
    assert results["best_epoch"] == 1 and results["monitor"] == "mae"


class StagedModel(MultimodalModel):
    """Warm-up on the encoder only, then two stages per batch (head, encoder), each
    checking that the other stage's step did not move its parameters."""

    @dataclass
    class Options:
        pass

    def __init__(self, spec, options=None):
        super().__init__(spec, options or self.Options())
        self.encoder = nn.Linear(spec.modalities[0].dim, 8)
        self.head = nn.Linear(8, 1)
        self.calls: list[tuple[str, str]] = []
        self.violations = 0
        self._snap: dict[str, list[torch.Tensor]] = {}

    def forward(self, batch):
        return ModelOutput(self.head(torch.relu(self.encoder(batch.features["x"]))).squeeze(-1))

    def _check(self, name, module):
        now = [p.detach().clone() for p in module.parameters()]
        if name in self._snap and any(not torch.equal(a, b) for a, b in zip(self._snap[name], now)):
            self.violations += 1
        self._snap[name] = now

    def objective(self, batch, phase, stage):
        self.calls.append((phase, stage))
        # parameters a stage does not own must be exactly where the last look left them
        if stage == "head":
            self._check("head", self.head)   # encoder stage ran since: head must not have moved
            self._snap["encoder"] = [p.detach().clone() for p in self.encoder.parameters()]
        elif phase == "main":
            self._check("encoder", self.encoder)  # head stage ran since: encoder must not have moved
            self._snap["head"] = [p.detach().clone() for p in self.head.parameters()]
        loss = task_loss(self.task, self.forward(batch).prediction, batch.y)
        return Objective(loss, {"task": loss})

    def training_plan(self, config):
        enc = self.param_groups(self.encoder.parameters(), config)
        head = self.param_groups(self.head.parameters(), config)
        return [
            Phase("warmup", [Stage("enc", enc)], epochs=2),
            Phase("main", [Stage("head", head), Stage("enc", enc)]),
        ]


def test_phases_and_stages_only_move_their_own_parameters():
    ds = _regression_data()
    model = StagedModel(ds.spec)
    head_before = [p.detach().clone() for p in model.head.parameters()]
    cfg = TrainConfig(epochs=2, patience=5, progress=False, batch_size=16, lr=0.05)
    result = Trainer(model, ds, cfg).fit()
    warm = [c for c in model.calls if c[0] == "warmup"]
    assert len(warm) == 2 * 3 and set(warm) == {("warmup", "enc")}
    main = [c for c in model.calls if c[0] == "main"]
    assert main[:2] == [("main", "head"), ("main", "enc")] and len(main) == 2 * 2 * 3
    assert model.violations == 0
    # the warm-up never touched the head; the main phase did
    assert not all(torch.equal(a, b) for a, b in zip(head_before, model.head.parameters()))
    phases = [r["phase"] for r in result.history]
    assert phases == ["warmup", "warmup", "main", "main"]
    assert "head/task" in result.history[-1]["train"] and "enc/task" in result.history[-1]["train"]
    assert all(p.requires_grad for p in model.parameters())  # flags restored


class EpochScheduledModel(StagedModel):
    """StagedModel's two main stages, swept one whole epoch each (``stage_schedule="epoch"``)."""

    def objective(self, batch, phase, stage):
        # within a sweep, the other stage's parameters must not move at all
        other = self.encoder if stage == "head" else self.head
        if self.calls and self.calls[-1][1] == stage:
            self._check(stage, other)
        else:
            self._snap[stage] = [p.detach().clone() for p in other.parameters()]
        self.calls.append((phase, stage))
        loss = task_loss(self.task, self.forward(batch).prediction, batch.y)
        return Objective(loss, {"task": loss})

    def training_plan(self, config):
        enc = self.param_groups(self.encoder.parameters(), config)
        head = self.param_groups(self.head.parameters(), config)
        return [Phase("main", [Stage("head", head), Stage("enc", enc)], stage_schedule="epoch")]


def test_epoch_stage_schedule_sweeps_each_stage_over_the_split():
    ds = _regression_data()  # 40 training samples: 3 batches of 16
    model = EpochScheduledModel(ds.spec)
    cfg = TrainConfig(epochs=2, patience=5, progress=False, batch_size=16, lr=0.05)
    result = Trainer(model, ds, cfg).fit()
    main = [c[1] for c in model.calls]
    # per epoch: the head stage over all 3 batches, then the encoder stage over all 3
    assert main == ["head"] * 3 + ["enc"] * 3 + ["head"] * 3 + ["enc"] * 3
    assert model.violations == 0  # each stage still moves only its own parameters
    assert len(result.history) == 2 and {"head/task", "enc/task"} <= set(result.history[-1]["train"])
    assert all(p.requires_grad for p in model.parameters())


def test_epoch_stage_schedule_logs_per_sample_means_and_rejects_unknown_schedules():
    from mmib.errors import ConfigError

    ds = _regression_data()
    model = EpochScheduledModel(ds.spec)
    cfg = TrainConfig(epochs=1, patience=5, progress=False, batch_size=16, lr=1e-12, optimizer="sgd")
    row = Trainer(model, ds, cfg).fit().history[0]["train"]
    # SGD at lr 1e-12: both sweeps see the same network, so their per-sample mean losses agree
    assert row["head/task"] == pytest.approx(row["enc/task"], rel=1e-6)
    with pytest.raises(ConfigError, match="stage_schedule 'sample'"):
        Phase("main", [], stage_schedule="sample")


def test_warmup_phase_leaves_other_parameters_untouched():
    ds = _regression_data()
    model = StagedModel(ds.spec)
    head_before = [p.detach().clone() for p in model.head.parameters()]
    cfg = TrainConfig(epochs=0, progress=False, batch_size=16, lr=0.05)
    Trainer(model, ds, cfg).fit()
    assert all(torch.equal(a, b) for a, b in zip(head_before, model.head.parameters()))


def _interrupting(model, at_epoch):
    original = model.on_epoch_end

    def hook(epoch, phase):
        if epoch == at_epoch:
            raise KeyboardInterrupt
        return original(epoch, phase)

    model.on_epoch_end = hook
    return model


def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_sim):
    cfg = TrainConfig(epochs=5, batch_size=32, progress=False, patience=10, seed=3)
    spec = tiny_sim.spec
    torch.manual_seed(0)
    full = build_model("concat", spec, hidden=16, dropout=0.2)
    Trainer(full, tiny_sim, cfg, tmp_path / "full", RunConfig(train=cfg)).fit()

    torch.manual_seed(0)
    part = _interrupting(build_model("concat", spec, hidden=16, dropout=0.2), at_epoch=3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(part, tiny_sim, cfg, tmp_path / "part", RunConfig(train=cfg)).fit()
    assert (tmp_path / "part" / rundir.CHECKPOINT).exists()
    assert len(rundir.read_jsonl(tmp_path / "part" / rundir.METRICS)) == 2
    torch.manual_seed(123)  # a different init must not matter: the checkpoint wins
    resumed = build_model("concat", spec, hidden=16, dropout=0.2)
    result = Trainer(resumed, tiny_sim, cfg, tmp_path / "part", RunConfig(train=cfg)).fit(resume=True)
    assert result.results["epochs_run"] == 5
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    a = rundir.read_jsonl(tmp_path / "full" / rundir.METRICS)
    b = rundir.read_jsonl(tmp_path / "part" / rundir.METRICS)
    assert [r["train"]["loss"] for r in a] == [r["train"]["loss"] for r in b]


def test_resume_errors(tmp_path, tiny_sim):
    from mmib.errors import RunError

    cfg = TrainConfig(epochs=1, progress=False)
    model = build_model("concat", tiny_sim.spec, hidden=8)
    with pytest.raises(RunError, match="no checkpoint"):
        Trainer(model, tiny_sim, cfg, tmp_path / "none").fit(resume=True)
    Trainer(model, tiny_sim, cfg, tmp_path / "done").fit()
    with pytest.raises(RunError, match="already finished"):
        Trainer(model, tiny_sim, cfg, tmp_path / "done").fit(resume=True)


class NaNModel(StagedModel):
    def objective(self, batch, phase, stage):
        loss = self.forward(batch).prediction.mean() * float("nan")
        return Objective(loss, {"task": loss})

    def training_plan(self, config):
        return MultimodalModel.training_plan(self, config)


def test_divergence_is_reported():
    ds = _regression_data()
    with pytest.raises(TrainingDiverged, match="non-finite loss, task"):
        Trainer(NaNModel(ds.spec), ds, TrainConfig(epochs=2, progress=False)).fit()


def test_text_parameters_get_their_own_learning_rate():
    spec = DatasetSpec.simple({"x": 3})

    class Text(nn.Module):
        pretrained_text = True

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

    model = StagedModel(spec)
    model.text = Text()
    groups = model.param_groups(model.parameters(), TrainConfig(lr=1e-3, text_lr=5e-5))
    assert [(g.name, g.lr, len(g.params)) for g in groups] == [("main", 1e-3, 4), ("text", 5e-5, 2)]


def test_bad_training_options(tiny_sim):
    from mmib.errors import ConfigError

    model = build_model("concat", tiny_sim.spec, hidden=8)
    with pytest.raises(ConfigError, match="optimizer 'adamax'"):
        Trainer(model, tiny_sim, TrainConfig(optimizer="adamax"))
    with pytest.raises(ConfigError, match="monitor 'r2'"):
        Trainer(model, tiny_sim, TrainConfig(monitor="r2"))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        Trainer(model, tiny_sim, TrainConfig(precision="fp16", epochs=1, progress=False)).fit()


def test_best_weights_are_copied_into_the_previous_copy():
    from mmib.train.engine import _copy_state

    model = nn.Linear(3, 2)
    first = _copy_state(model.state_dict(), None)
    with torch.no_grad():
        model.weight.add_(1.0)
    second = _copy_state(model.state_dict(), first)
    assert second["weight"].data_ptr() == first["weight"].data_ptr()  # no second copy held at once
    assert torch.equal(second["weight"], model.weight) and second["weight"].data_ptr() != model.weight.data_ptr()
    other = nn.Linear(3, 4).state_dict()  # another shape: a fresh copy
    third = _copy_state(other, second)
    assert third["weight"].shape == (4, 3) and third["weight"].data_ptr() != second["weight"].data_ptr()


def test_warm_up_ramps_every_group_linearly(monkeypatch):
    from mmib.errors import ConfigError
    from mmib.train import engine

    seen: list[float] = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            seen.append(self.param_groups[0]["lr"])
            return super().step(closure)

    monkeypatch.setitem(engine.OPTIMIZERS, "sgd", RecordingSGD)
    ds = _regression_data()  # 40 training samples: 4 batches of 10 per epoch
    cfg = TrainConfig(epochs=3, batch_size=10, lr=0.1, optimizer="sgd", warmup_epochs=1.5, progress=False, patience=9)
    model = build_model("concat", ds.spec, hidden=4, head_hidden=4)
    Trainer(model, ds, cfg).fit()
    assert seen == pytest.approx([0.1 * k / 6 for k in range(1, 7)] + [0.1] * 6)  # 6 warm-up steps, then lr
    with pytest.raises(ConfigError, match="warmup_epochs"):
        Trainer(model, ds, TrainConfig(warmup_epochs=-1.0))


# ---------------------------------------------------------------------- faults, checks and bad options
def _cfg(**kw):
    return TrainConfig(**{"epochs": 5, "batch_size": 32, "progress": False, "patience": 10, "seed": 3, **kw})


def _concat(spec, seed=0):
    torch.manual_seed(seed)
    return build_model("concat", spec, hidden=16, dropout=0.2)


def test_a_kill_between_the_checkpoint_and_the_model_write_resumes_to_the_same_run(tmp_path, tiny_sim, monkeypatch):
    cfg = _cfg()
    full = _concat(tiny_sim.spec)
    Trainer(full, tiny_sim, cfg, tmp_path / "full", RunConfig(train=cfg)).fit()
    best = json.loads((tmp_path / "full" / rundir.RESULTS).read_text())["best_epoch"]
    assert best > 1  # the kill then leaves the model file of an earlier epoch behind

    real = Trainer._save_best

    def killed_at_the_best_epoch(self, model, epoch):
        if epoch == best:
            raise KeyboardInterrupt  # the checkpoint of this epoch is written, its model file is not
        real(self, model, epoch)

    monkeypatch.setattr(Trainer, "_save_best", killed_at_the_best_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "part", RunConfig(train=cfg)).fit()
    monkeypatch.setattr(Trainer, "_save_best", real)
    part = tmp_path / "part"
    header = rundir.read_state_header(part / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT)
    assert header["state"]["best_epoch"] == best == header["state"]["epoch"]
    assert rundir.read_state_header(part / rundir.MODEL, rundir.MODEL_FORMAT)["epoch"] < best
    result = Trainer(_concat(tiny_sim.spec, seed=9), tiny_sim, cfg, part, RunConfig(train=cfg)).fit(resume=True)
    assert result.best_epoch == best
    assert rundir.read_state_header(part / rundir.MODEL, rundir.MODEL_FORMAT)["epoch"] == best
    for (k, a), (_, b) in zip(full.state_dict().items(), result.model.state_dict().items()):
        assert torch.equal(a, b), k
    a, b = (rundir.read_jsonl(d / rundir.METRICS) for d in (tmp_path / "full", part))
    assert [r["epoch"] for r in b] == [1, 2, 3, 4, 5]
    assert [r["train"] for r in a] == [r["train"] for r in b]
    assert json.loads((tmp_path / "full" / rundir.RESULTS).read_text())["test"] == result.test


def test_resume_refuses_an_edited_config_other_data_and_a_checkpoint_without_optimizer_state(tmp_path, tiny_sim):
    from mmib.data.synthetic import make_sim
    from mmib.errors import RunError

    cfg = _cfg(epochs=4)
    run = RunConfig(train=cfg)
    stop = _interrupting(_concat(tiny_sim.spec), at_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(stop, tiny_sim, cfg, tmp_path / "r", run).fit()
    edited = RunConfig(train=cfg)
    edited.data.path = "/elsewhere/data.npz"
    with pytest.raises(RunError, match=r"config.yaml: differs from the configuration the run started with "
                                       r"\(data.path; data.path was None, now '/elsewhere/data.npz'\)"):
        Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", edited).fit(resume=True)
    other = make_sim("sim-i", n_samples=600, seed=1, shared_dim=10, superfluous_dim=10, a1_dim=20, a2_dim=6)
    other.standardize()
    with pytest.raises(RunError, match=r"checkpoint.safetensors: the run started on other data \(digest differs"):
        Trainer(_concat(tiny_sim.spec), other, cfg, tmp_path / "r", run).fit(resume=True)
    # a different progress setting or thread count is not a different run
    Trainer(_concat(tiny_sim.spec), tiny_sim, _cfg(epochs=4, threads=1), tmp_path / "r", run).fit(resume=True)

    stop = _interrupting(_concat(tiny_sim.spec), at_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(stop, tiny_sim, cfg, tmp_path / "s", run).fit()
    ck = rundir.read_state(tmp_path / "s" / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT)
    rundir.write_state(tmp_path / "s" / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT, {**ck, "optimizers": {}})
    with pytest.raises(RunError, match=r"has no optimizer state for stage 'main/main' \(not a complete mmib checkpoint\)"):
        Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "s", run).fit(resume=True)
    del ck["rng"]
    rundir.write_state(tmp_path / "s" / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT, ck)
    with pytest.raises(RunError, match=r"has no 'rng' \(not a complete mmib checkpoint\)"):
        Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "s", run).fit(resume=True)


def test_a_locked_run_directory_is_refused_and_a_fresh_start_needs_overwrite(tmp_path, tiny_sim):
    from mmib.errors import RunError

    cfg = _cfg(epochs=1)
    with rundir.RunLock(tmp_path / "r"):
        with pytest.raises(RunError, match="in use by process"):
            Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg)).fit()
    assert not (tmp_path / "r" / rundir.CONFIG).exists()
    Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg), overwrite=False).fit()
    with pytest.raises(RunError, match="holds a finished run; pass --overwrite"):
        Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg), overwrite=False).fit()
    assert not (tmp_path / "r" / rundir.LOCK).exists()


def test_leftover_temporary_files_are_removed_by_a_resume_and_a_rerun(tmp_path, tiny_sim):
    cfg = _cfg(epochs=3)
    stop = _interrupting(_concat(tiny_sim.spec), at_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(stop, tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg)).fit()
    stale = [tmp_path / "r" / ".checkpoint.safetensors.k1ll3d.tmp", tmp_path / "r" / ".model.safetensors.x.tmp"]
    for f in stale:
        f.write_bytes(b"\0" * 1000)
    Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg)).fit(resume=True)
    assert not any(f.exists() for f in stale)
    stale[0].write_bytes(b"\0")
    Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg)).fit()  # an overwrite
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(
        [rundir.CONFIG, rundir.METRICS, rundir.MODEL, rundir.RESULTS])


def test_a_full_disk_mid_run_is_a_run_error_and_the_run_stays_resumable(tmp_path, tiny_sim, monkeypatch):
    import errno

    from mmib.errors import RunError

    cfg = _cfg(epochs=3)
    real = rundir.atomic_write_with
    writes = {"n": 0}

    def full_after_a_few(path, write):
        writes["n"] += 1
        if path.name == rundir.CHECKPOINT and writes["n"] > 4:
            def failing(tmp):
                write(tmp)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, failing)
        return real(path, write)

    monkeypatch.setattr(rundir, "atomic_write_with", full_after_a_few)
    with pytest.raises(RunError, match=r"checkpoint.safetensors: cannot write \(No space left on device\)"):
        Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg)).fit()
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]
    result = Trainer(_concat(tiny_sim.spec), tiny_sim, cfg, tmp_path / "r", RunConfig(train=cfg)).fit(resume=True)
    assert result.results["epochs_run"] == 3


@pytest.mark.parametrize("model", ["concat", "late", "mmim"])
def test_a_finite_explosion_is_an_error_not_a_result(model, tmp_path, tiny_msa):
    # the reported case: plain Adam, the earlier dropout 0.1, a finite blow-up
    cfg = _cfg(epochs=3, lr=1e3, optimizer="adam", weight_decay=0.0)
    net = build_model(model, tiny_msa.spec, hidden=16, dropout=0.1)
    with pytest.raises(TrainingDiverged, match=r"training diverged: valid predictions reach .* times the width of "
                                               r"the training targets' range .*; try a smaller lr \(now 1000\)"):
        Trainer(net, tiny_msa, cfg, tmp_path / "r", RunConfig(train=cfg)).fit()
    assert not (tmp_path / "r" / rundir.RESULTS).exists()


class GrowingModel(StagedModel):
    """A loss that grows ten-thousandfold per epoch while staying finite."""

    def objective(self, batch, phase, stage):
        loss = self.forward(batch).prediction.pow(2).mean() * 0 + 10.0 ** (4 * float(self.grown))
        return Objective(loss, {"task": loss})

    def training_plan(self, config):
        return MultimodalModel.training_plan(self, config)

    def on_epoch_end(self, epoch, phase):
        self.grown += 1
        return {}


def test_a_loss_that_grows_by_orders_of_magnitude_is_reported():
    ds = _regression_data()
    model = GrowingModel(ds.spec)
    model.register_buffer("grown", torch.zeros(()))
    with pytest.raises(TrainingDiverged, match=r"in epoch 3 \(main\): loss 1e\+08 is more than 1e\+06 times its "
                                               r"first-epoch value 1"):
        Trainer(model, ds, TrainConfig(epochs=5, progress=False)).fit()


@pytest.mark.parametrize(("option", "message"), [
    ({"lr": -1.0}, "lr must be a finite number > 0, got -1.0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0"),
    ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0, got -1.0"),
    ({"clip_grad": -1.0}, "clip_grad must be a finite number > 0 (or null for no clipping), got -1.0"),
    ({"threads": -1}, "threads must be an integer >= 1"),
    ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1, got 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
])
def test_out_of_range_training_options_fail_before_training(tiny_sim, option, message):
    from mmib.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        Trainer(_concat(tiny_sim.spec), tiny_sim, TrainConfig(**option))


def test_an_empty_validation_split_is_warned_about():
    ds = _regression_data()
    ds.splits["valid"] = torch.zeros(0, dtype=torch.long)
    with pytest.warns(UserWarning, match="the validation split is empty, so no best epoch can be selected"):
        Trainer(StagedModel(ds.spec), ds, TrainConfig(epochs=1, progress=False))


def test_adam_runs_the_fused_kernel_where_pytorch_has_one():
    from mmib.train.engine import fused_options

    dense = [torch.zeros(3, 2), torch.zeros(2, dtype=torch.float64)]
    assert fused_options(torch.optim.Adam, dense) == {"fused": True}
    assert fused_options(torch.optim.AdamW, dense) == {"fused": True}
    assert fused_options(torch.optim.SGD, dense) == {}  # not Adam: the default implementation
    assert fused_options(torch.optim.Adam, []) == {}
    assert fused_options(torch.optim.Adam, [torch.zeros(2, device="meta")]) == {}
    assert fused_options(torch.optim.Adam, [torch.zeros(2, dtype=torch.complex64)]) == {}
    assert fused_options(torch.optim.Adam, [torch.zeros(2, 2).to_sparse()]) == {}


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_trainers_optimizer_is_fused_for_adam_and_steps_as_the_default_one(tiny_sim, optimizer):
    """The fused kernel is the same update rule: 30 steps of both agree to float rounding, and
    the weight decay and learning rate reach it."""
    model = build_model("concat", tiny_sim.spec, hidden=8)
    cfg = TrainConfig(epochs=1, progress=False, optimizer=optimizer, lr=3e-3, weight_decay=0.1)
    trainer = Trainer(model, tiny_sim, cfg)
    stage = model.training_plan(cfg)[0].stages[0]
    opt = trainer._optimizer(stage)
    assert opt.param_groups[0].get("fused") is (True if optimizer != "sgd" else None)
    params = [p for g in stage.groups for p in g.params]
    twins = [p.detach().clone().requires_grad_() for p in params]
    plain = type(opt)([{"params": twins, "lr": 3e-3, "weight_decay": 0.1}])
    g = torch.Generator().manual_seed(0)
    start = [p.detach().clone() for p in params]
    for _ in range(30):
        for p, q in zip(params, twins):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt.step()
        plain.step()
    moved = max((p.detach() - s).abs().max().item() for p, s in zip(params, start))
    assert moved > 1e-3  # it stepped
    assert max((p.detach() - q.detach()).abs().max().item() for p, q in zip(params, twins)) < 1e-5


def test_a_checkpoint_of_the_plain_adam_resumes_with_it(tmp_path, tiny_sim, monkeypatch):
    """Checkpoints written before Adam was fused hold the loop's optimizer; resuming one steps on
    with that optimizer and gives the run that never stopped."""
    import sys

    monkeypatch.setattr(sys.modules[Trainer.__module__], "fused_options", lambda kind, params: {})  # as an older version built it
    cfg = TrainConfig(epochs=4, batch_size=32, progress=False, patience=10, seed=3)
    torch.manual_seed(0)
    full = build_model("concat", tiny_sim.spec, hidden=16, dropout=0.2)
    Trainer(full, tiny_sim, cfg, tmp_path / "full", RunConfig(train=cfg)).fit()
    torch.manual_seed(0)
    part = _interrupting(build_model("concat", tiny_sim.spec, hidden=16, dropout=0.2), at_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(part, tiny_sim, cfg, tmp_path / "part", RunConfig(train=cfg)).fit()
    monkeypatch.undo()  # this version resumes it
    resumed = build_model("concat", tiny_sim.spec, hidden=16, dropout=0.2)
    trainer = Trainer(resumed, tiny_sim, cfg, tmp_path / "part", RunConfig(train=cfg))
    result = trainer.fit(resume=True)
    assert result.results["epochs_run"] == 4
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    torch.manual_seed(0)  # the same run with the fused kernel throughout ends elsewhere (by rounding),
    fused = build_model("concat", tiny_sim.spec, hidden=16, dropout=0.2)  # so the equality above is the loop's
    Trainer(fused, tiny_sim, cfg, None, RunConfig(train=cfg)).fit()
    assert any(not torch.equal(a, b) for a, b in zip(full.state_dict().values(), fused.state_dict().values()))
