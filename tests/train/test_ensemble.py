"""Runs trained together (mmib.train.ensemble, mmib.api.train_together) against runs trained alone."""

import math
import statistics

import pytest
import torch

from mmib.api import load_run, make_config, train, train_together
from mmib.api import evaluate as evaluate_run
from mmib.data import load_dataset
from mmib.errors import ConfigError
from mmib.models import build_model
from mmib.train import rundir
from mmib.train.engine import TrainingDiverged, seed_everything
from mmib.train.ensemble import Member, ensemble_seed, model_unsupported, trial_step, why_not_together

#: Members match their runs alone to float rounding (batched vs unbatched matrix products):
#: after a few epochs the weights differ by ~1e-7, test metrics by less than this.
ROUNDING_TOL = 1e-4

SMALL_MSA = {"n_train": 256, "n_valid": 64, "n_test": 128}
#: test MAE of the training-label mean on sim-msa (n_train=640, n_test=256, data seed 0)
MEAN_PREDICTOR_MAE = 1.62


def _configs(model, seeds, *overrides, epochs=5, patience=2, data=None, **train_options):
    return [
        make_config(model, "sim-msa", data_options=dict(data or SMALL_MSA), overrides=[*overrides, f"train.seed={s}"],
                    progress=False, epochs=epochs, patience=patience, batch_size=32, **train_options)
        for s in seeds
    ]


def _alone(cfgs, tmp_path, tag="alone"):
    return [train(config=c, out=tmp_path / f"{tag}{i}") for i, c in enumerate(cfgs)]


def _files(path):
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def test_members_match_their_runs_alone_without_randomness(tmp_path):
    """concat without dropout is deterministic: each member follows its run alone to float rounding,
    including its own early stop, and writes a run directory of the same form."""
    cfgs = _configs("concat", [0, 1, 2], "model.dropout=0.0", epochs=8, patience=2)
    lines = []
    together = train_together(cfgs, [tmp_path / f"ens{i}" for i in range(3)], log=lines.append)
    assert lines and "together" in lines[0]
    alone = _alone(cfgs, tmp_path)
    for i, (t, a) in enumerate(zip(together, alone)):
        assert not isinstance(t, Exception), t
        assert t.best_epoch == a.best_epoch and len(t.history) == len(a.history)
        for k, v in a.test.items():
            assert t.test[k] == pytest.approx(v, abs=ROUNDING_TOL), k
        ens, ref = tmp_path / f"ens{i}", tmp_path / f"alone{i}"
        assert _files(ens) == _files(ref) == sorted([rundir.CONFIG, rundir.METRICS, rundir.MODEL, rundir.RESULTS])
        assert (ens / rundir.CONFIG).read_text() == (ref / rundir.CONFIG).read_text()
        rows_t, rows_a = rundir.read_jsonl(ens / rundir.METRICS), rundir.read_jsonl(ref / rundir.METRICS)
        assert [sorted(r) for r in rows_t] == [sorted(r) for r in rows_a]
        assert [r["best_epoch"] for r in rows_t] == [r["best_epoch"] for r in rows_a]
        for rt, ra in zip(rows_t, rows_a):
            assert rt["train"]["loss"] == pytest.approx(ra["train"]["loss"], rel=1e-4)
        res_t, res_a = rundir.read_json(ens / rundir.RESULTS), rundir.read_json(ref / rundir.RESULTS)
        assert sorted(res_t) == sorted(res_a) and res_t["seed"] == i
        reloaded = evaluate_run(load_run(ens))
        assert reloaded["mae"] == pytest.approx(res_t["test"]["mae"], abs=1e-9)
    # the members really are different runs
    assert len({round(t.test["mae"], 6) for t in together}) == 3


def test_initial_weights_are_those_of_the_runs_alone(tmp_path):
    cfgs = _configs("e-mib", [3, 4], epochs=0)
    together = train_together(cfgs, [tmp_path / "a", tmp_path / "b"])
    for cfg, res in zip(cfgs, together):
        seed_everything(cfg.train.seed)
        ref = build_model("e-mib", res.model.spec, **cfg.model.options)
        for (name, p), q in zip(ref.state_dict().items(), res.model.state_dict().values()):
            assert torch.equal(p, q), name


def test_members_stop_on_their_own_budgets_and_options(tmp_path):
    """Per-member epochs, patience, lr, learning-rate warm-up and data seed: each member matches its run alone."""
    cfgs = _configs("concat", [0, 1, 2], "model.dropout=0.0", epochs=6, patience=10)
    cfgs[0].train.epochs = 2
    cfgs[1].train.lr = 3e-3
    cfgs[2].train.patience = 1
    cfgs[2].data.seed = 5
    cfgs[2].train.warmup_epochs = 1.5
    together = train_together(cfgs, [tmp_path / f"ens{i}" for i in range(3)])
    alone = _alone(cfgs, tmp_path)
    assert len(together[0].history) == 2
    for t, a in zip(together, alone):
        assert len(t.history) == len(a.history) and t.best_epoch == a.best_epoch
        assert t.test["mae"] == pytest.approx(a.test["mae"], abs=ROUNDING_TOL)


def test_per_member_beta(tmp_path):
    """E-MIB members with their own beta: each epoch's logged loss is task + beta_k * kl of that member."""
    betas = [0.0, 1e-2, 1.0]
    cfgs = _configs("e-mib", [0, 1, 2], epochs=2, patience=5)
    for c, b in zip(cfgs, betas):
        c.model.options["beta"] = b
    assert why_not_together([Member(build_model("e-mib", _spec(), **c.model.options), None, c.train)  # type: ignore[arg-type]
                             for c in cfgs[:1]]) is None
    together = train_together(cfgs, [tmp_path / f"ens{i}" for i in range(3)])
    for t, b in zip(together, betas):
        for row in t.history:
            tr = row["train"]
            assert tr["loss"] == pytest.approx(tr["task"] + b * tr["kl"], rel=1e-5, abs=1e-6)
    kls = [t.history[-1]["train"]["kl"] for t in together]
    assert kls[2] < kls[0]  # beta = 1 squeezes the KL term the others leave alone


def _spec():
    from mmib.data.synthetic import make_sim_msa

    return make_sim_msa(n_train=8, n_valid=2, n_test=2).spec


def test_resuming_an_interrupted_ensemble_is_bit_identical(tmp_path):
    """Interrupted after epoch 2 (every member checkpointed), resumed together: the same numbers as
    an ensemble that ran through (dropout on: the shared generator is restored too)."""
    cfgs = _configs("concat", [0, 1], epochs=4, patience=10)
    full = train_together(cfgs, [tmp_path / "full0", tmp_path / "full1"])

    def stop_after_2(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    outs = [tmp_path / "cut0", tmp_path / "cut1"]
    with pytest.raises(KeyboardInterrupt):
        train_together(cfgs, outs, epoch_callbacks=[None, stop_after_2])
    assert all((o / rundir.CHECKPOINT).is_file() for o in outs)
    resumed = train_together([None, None], outs, resume=True)
    for f, r in zip(full, resumed):
        assert r.test == f.test
        assert [row["train"] for row in r.history] == [row["train"] for row in f.history]


def test_a_member_resumes_alone(tmp_path):
    cfgs = _configs("concat", [0, 1], epochs=4, patience=10)

    def stop(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    outs = [tmp_path / "m0", tmp_path / "m1"]
    with pytest.raises(KeyboardInterrupt):
        train_together(cfgs, outs, epoch_callbacks=[None, stop])
    result = train(out=outs[0], resume=True)
    assert len(result.history) == 4 and (outs[0] / rundir.RESULTS).is_file()
    assert not (outs[0] / rundir.CHECKPOINT).exists()


def test_one_member_failing_leaves_the_others(tmp_path):
    """A member whose callback raises (a pruned trial) or whose loss diverges ends alone; its
    checkpoint stays, the others finish."""
    cfgs = _configs("concat", [0, 1, 2, 3], "model.dropout=0.0", epochs=3, patience=10)
    cfgs[2].train.lr = 1e20  # the loss becomes non-finite
    cfgs[3].train.optimizer, cfgs[3].train.lr = "sgd", 1e39  # the optimizer step itself fails (float overflow)

    class Pruned(Exception):
        pass

    def prune(epoch, row):
        if epoch == 1:
            raise Pruned("pruned")

    outs = [tmp_path / f"m{i}" for i in range(4)]
    res = train_together(cfgs, outs, epoch_callbacks=[prune, None, None, None])
    assert isinstance(res[0], Pruned) and (outs[0] / rundir.CHECKPOINT).is_file()
    assert not isinstance(res[1], Exception) and len(res[1].history) == 3
    assert res[1].test == pytest.approx(train(config=cfgs[1]).test, abs=ROUNDING_TOL)  # untouched by the others
    assert isinstance(res[2], TrainingDiverged)
    assert isinstance(res[3], RuntimeError) and "overflow" in str(res[3])


def test_unsupported_models_fall_back_with_a_reason(tmp_path):
    """MMIM declares why; an LSTM over packed sequences fails the vmap trial. Both train one at a time,
    bit-identical to runs alone."""
    cfgs = _configs("mmim", [0, 1], epochs=1)
    assert "memory" in model_unsupported(build_model("mmim", _spec()), cfgs[0].train)
    lines = []
    res = train_together(cfgs, [tmp_path / "a", tmp_path / "b"], log=lines.append)
    assert len(lines) == 1 and "one at a time" in lines[0] and "memory" in lines[0]
    assert [r.test for r in res] == [a.test for a in _alone(cfgs, tmp_path)]

    seq = _configs("concat", [0, 1], "model.encoder=lstm", epochs=1,
                   data={"n_train": 64, "n_valid": 16, "n_test": 16, "seq_len": 6})
    assert build_model("concat", _seq_spec(), encoder="lstm").encoders.kinds["audio"] == "lstm"
    lines = []
    res = train_together(seq, [tmp_path / "s0", tmp_path / "s1"], log=lines.append)
    assert "vmap" in lines[0] and "one at a time" in lines[0]
    assert [r.test for r in res] == [a.test for a in _alone(seq, tmp_path, "seq")]


def _seq_spec():
    from mmib.data.synthetic import make_sim_msa

    return make_sim_msa(n_train=8, n_valid=2, n_test=2, seq_len=4).spec


def test_conv_encoders_on_sequences_run_together(tmp_path):
    seq = _configs("c-mib", [0, 1], "model.encoder=conv1d", epochs=1,
                   data={"n_train": 64, "n_valid": 16, "n_test": 16, "seq_len": 6})
    lines = []
    res = train_together(seq, [tmp_path / "s0", tmp_path / "s1"], log=lines.append)
    assert "together" in lines[0] and all(not isinstance(r, Exception) for r in res)


def test_why_not_together_names_the_difference(tiny_msa):
    def member(model="concat", seed=0, out=None, **opts):
        cfg = make_config(model, "sim-msa", progress=False, seed=seed, **opts)
        return Member(build_model(model, tiny_msa.spec), tiny_msa, cfg.train, out)

    assert why_not_together([member(seed=0), member(seed=1)]) is None
    assert "batch_size" in why_not_together([member(), member(batch_size=16)])
    assert "different models" in why_not_together([member(), member("late")])
    assert "same run directory" in why_not_together([member(out="x"), member(out="x")])
    a, b = member("e-mib"), member("e-mib")
    b.model = build_model("e-mib", tiny_msa.spec, z_dim=8)
    assert "z_dim" in why_not_together([a, b])
    assert "precision" in model_unsupported(a.model, make_config("e-mib", "sim-msa", precision="bf16").train)
    assert trial_step([member(seed=0), member(seed=1)]) is None


def test_optimizer_state_follows_the_parameters_layout():
    """A member's parameters are strided views while it trains; state loaded contiguous from a
    checkpoint must be laid out alike, or the fused Adam kernel pairs the wrong elements."""
    from mmib.train.ensemble import _fuse, _match_layouts, _unfuse

    base, grad = torch.randn(7, 5), torch.arange(35.0).reshape(7, 5) / 10

    def steps(strided, fix):
        p = torch.empty(5, 7).t() if strided else torch.empty(7, 5)
        p.copy_(base).requires_grad_(True)
        opt = torch.optim.Adam([p], lr=0.1)
        for i in range(2):
            p.grad = (torch.empty(5, 7).t() if strided else torch.empty(7, 5)).copy_(grad * (i + 1))
            if i == 1:  # as loaded from a checkpoint: contiguous
                opt.state[p] = {k: v.contiguous() for k, v in opt.state[p].items()}
                if fix:
                    _match_layouts(opt)
            before = _fuse(opt)
            opt.step()
            _unfuse(opt, before)
        assert opt.param_groups[0]["fused"] is None  # restored: checkpoints hold a plain Adam
        return p.detach()

    reference = steps(False, True)
    assert (steps(True, True) - reference).abs().max() < 1e-6
    assert (steps(True, False) - reference).abs().max() > 1e-3  # the hazard the layout match removes


def test_ensemble_seed_is_stable():
    assert ensemble_seed([0, 1, 2]) == ensemble_seed((0, 1, 2)) != ensemble_seed([0, 1])
    assert 0 <= ensemble_seed([7]) < 2**56


def test_train_together_checks_its_arguments(tmp_path):
    with pytest.raises(ConfigError, match="length"):
        train_together(_configs("concat", [0, 1]), [tmp_path / "a"])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["concat", "e-mib", "c-mib"])
def test_stochastic_members_match_runs_alone_in_mean(tmp_path, model):
    """With dropout and sampled bottlenecks a member draws other random numbers than its run alone,
    so single runs differ by the noise of training (here about 0.03 MAE per run); over 5 seeds the
    mean test MAE of the members and of the runs alone agree within 3 standard errors of the
    difference of two means (each from its spread over the seeds)."""
    seeds = range(5)
    cfgs = _configs(model, seeds, epochs=12, patience=3, data={"n_train": 640, "n_valid": 128, "n_test": 256})
    together = [r.test["mae"] for r in train_together(cfgs, [tmp_path / f"e{s}" for s in seeds])]
    alone = [r.test["mae"] for r in _alone(cfgs, tmp_path)]
    se = math.sqrt(statistics.variance(together) / len(together) + statistics.variance(alone) / len(alone))
    assert abs(statistics.mean(together) - statistics.mean(alone)) < 3 * se + 1e-3, (together, alone)
    assert statistics.mean(together) < 0.8 * MEAN_PREDICTOR_MAE  # learned


def _weights(path):
    state = load_run(path).model.state_dict()
    return {k: v.clone() for k, v in state.items()}


@pytest.mark.parametrize("case", ["same recipe", "warm-up differs", "lr differs", "clipped"])
def test_grouped_adam_step_is_exactly_the_members_own(tmp_path, monkeypatch, case):
    """The one fused Adam call over the stacked tensors gives each member the parameters, moments
    and step counts its own optimizer gives it, bit for bit; members whose learning rates part
    (warm-up, their own lr) hand over to their own optimizers mid-epoch, and clipping steps them
    one by one from the start."""
    from mmib.train import ensemble

    extra = {"same recipe": [], "warm-up differs": ["train.warmup_epochs=1.0"], "lr differs": [],
             "clipped": ["train.clip_grad=1.0"]}[case]
    cfgs = _configs("concat", [0, 1, 2], *extra, epochs=4, patience=10)  # dropout on: the shared generator
    if case == "warm-up differs":
        cfgs[2].train.warmup_epochs = 2.0
    if case == "lr differs":
        cfgs[1].train.lr *= 2
    built, handed = [], []
    real_build, real_hand_over = ensemble._GroupedAdam.build, ensemble._GroupedAdam.hand_over

    def spy_build(cls, *args):
        g = real_build.__func__(cls, *args)
        built.append(g is not None)
        return g

    def spy_hand_over(self):
        handed.append(self.handed_over)
        real_hand_over(self)

    monkeypatch.setattr(ensemble._GroupedAdam, "build", classmethod(spy_build))
    monkeypatch.setattr(ensemble._GroupedAdam, "hand_over", spy_hand_over)
    grouped = train_together(cfgs, [tmp_path / f"g{i}" for i in range(3)])
    assert len(built) == 4
    assert built == ([False] * 4 if case == "clipped" else [True] * 4)
    # every grouped epoch hands over once at its end; an epoch whose rates part hands over mid-epoch too
    mid_epoch = {"same recipe": 0, "warm-up differs": 2, "lr differs": 4, "clipped": 0}[case]
    assert handed.count(False) == sum(built) and handed.count(True) == mid_epoch

    monkeypatch.setattr(ensemble._GroupedAdam, "build", classmethod(lambda cls, *args: None))
    one_by_one = train_together(cfgs, [tmp_path / f"m{i}" for i in range(3)])
    for i, (g, m) in enumerate(zip(grouped, one_by_one)):
        assert not isinstance(g, Exception) and not isinstance(m, Exception)
        assert g.test == m.test
        assert [r["train"] for r in g.history] == [r["train"] for r in m.history]
        wg, wm = _weights(tmp_path / f"g{i}"), _weights(tmp_path / f"m{i}")
        assert wg.keys() == wm.keys() and all(torch.equal(wg[k], wm[k]) for k in wg)


def test_grouped_adam_keeps_the_optimizer_state_of_a_resumable_member(tmp_path, monkeypatch):
    """Interrupted after epoch 2: each member's checkpointed Adam state (moments, step count) is the
    one stepping it alone in the ensemble leaves."""
    from mmib.train import ensemble

    cfgs = _configs("concat", [0, 1], epochs=4, patience=10)

    def stop_after_2(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    states = {}
    for tag, patch in (("g", False), ("m", True)):
        if patch:
            monkeypatch.setattr(ensemble._GroupedAdam, "build", classmethod(lambda cls, *args: None))
        outs = [tmp_path / f"{tag}0", tmp_path / f"{tag}1"]
        with pytest.raises(KeyboardInterrupt):
            train_together(cfgs, outs, epoch_callbacks=[None, stop_after_2])
        states[tag] = [rundir.read_state(o / rundir.CHECKPOINT, rundir.CHECKPOINT_FORMAT)["optimizers"]
                       for o in outs]
    for og, om in zip(states["g"], states["m"]):
        assert og.keys() == om.keys() and og
        for name in og:
            sg, sm = og[name]["state"], om[name]["state"]
            assert sg.keys() == sm.keys() and sg
            for p in sg:
                assert sg[p].keys() == sm[p].keys() == {"step", "exp_avg", "exp_avg_sq"}
                for k in sg[p]:
                    assert torch.equal(sg[p][k], sm[p][k]), (name, p, k)
            assert og[name]["param_groups"] == om[name]["param_groups"]


def test_ensemble_dropout_draws_nn_dropouts_distribution_under_vmap():
    """The ensemble's dropout keeps 1 - p of the elements, scales them by 1 / (1 - p), draws
    other masks for other members, and is the identity in eval mode or at p = 0."""
    from mmib.train.ensemble import _EnsembleDropout

    torch.manual_seed(0)
    x = torch.ones(4, 200, 250)
    drop = _EnsembleDropout(0.3).train()
    out = torch.func.vmap(drop, randomness="different")(x)
    kept = out != 0
    assert torch.allclose(out[kept], torch.tensor(1 / 0.7))
    # 50,000 elements per member: the kept fraction within 5 standard errors of 0.7
    se = math.sqrt(0.7 * 0.3 / 50_000)
    for member in kept.float().mean(dim=(1, 2)).tolist():
        assert abs(member - 0.7) < 5 * se
    assert not torch.equal(kept[0], kept[1])  # each member its own mask
    assert torch.equal(_EnsembleDropout(0.0).train()(x), x)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(_EnsembleDropout(1.0).train()(x), torch.zeros_like(x))


def test_ensemble_dropout_scales_the_kept_values_of_any_input():
    from mmib.train.ensemble import _EnsembleDropout

    torch.manual_seed(1)
    x = torch.randn(3, 40, 50)
    out = torch.func.vmap(_EnsembleDropout(0.25).train(), randomness="different")(x)
    kept = out != 0
    assert 0.6 < kept.float().mean().item() < 0.9
    assert torch.allclose(out[kept], x[kept] / 0.75)


def test_tied_tensors_are_detected_and_the_built_in_models_have_none():
    """The vmapped step skips functional_call's untying only for a module whose parameters and
    buffers each have one name; a tied one (the same layer twice, a weight assigned to two
    layers, a shared buffer) keeps it."""
    from mmib.train.ensemble import _shares_tensors

    lin = torch.nn.Linear(4, 4)
    assert _shares_tensors(torch.nn.Sequential(lin, torch.nn.ReLU(), lin))
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    b.weight = a.weight
    assert _shares_tensors(torch.nn.Sequential(a, b))
    n1, n2 = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    n2.running_mean = n1.running_mean
    assert _shares_tensors(torch.nn.Sequential(n1, n2))
    assert not _shares_tensors(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)))
    ds = load_dataset("sim-msa-small", seed=0)
    for name in ("concat", "e-mib", "c-mib", "mmim"):
        assert not _shares_tensors(build_model(name, ds.spec)), name


def test_only_plain_dropout_layers_are_swapped_in_the_ensembles_step():
    from mmib.train.ensemble import _EnsembleDropout, _with_ensemble_dropout

    class OwnDropout(torch.nn.Dropout):
        pass

    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.2),
                              torch.nn.Sequential(torch.nn.Dropout(0.4), OwnDropout(0.1)))
    assert _with_ensemble_dropout(net) == 2
    assert isinstance(net[1], _EnsembleDropout) and net[1].p == 0.2
    assert isinstance(net[2][0], _EnsembleDropout) and net[2][0].p == 0.4
    assert type(net[2][1]) is OwnDropout


@pytest.mark.parametrize("data_seeds", [(0, 0, 0), (0, 1, 2)], ids=["one dataset", "own datasets"])
def test_members_validate_in_one_vmapped_forward(tmp_path, monkeypatch, data_seeds):
    """Every epoch the members' validation metrics come from one vmapped eval forward (on one
    shared dataset, or each member's own), and equal what each member's own evaluate gives."""
    from mmib.train import ensemble
    from mmib.train.engine import evaluate

    calls = []
    original = ensemble._Validation.__call__

    def checked(self, stack, active, option_values, device):
        metrics = original(self, stack, active, option_values, device)
        for a, m in zip(active, metrics):
            own = evaluate(a.run.model, a.member.dataset, "valid", a.member.config.eval_batch_size, device)
            assert m is not None and sorted(m) == sorted(own)
            for k, v in own.items():
                assert m[k] == pytest.approx(v, abs=ROUNDING_TOL), k
        calls.append(len(active))
        return metrics

    monkeypatch.setattr(ensemble._Validation, "__call__", checked)
    cfgs = [
        make_config("e-mib", "sim-msa", data_options=dict(SMALL_MSA), overrides=[f"train.seed={s}", f"data.seed={d}"],
                    progress=False, epochs=4, patience=10, batch_size=32, eval_batch_size=40)
        for s, d in zip([0, 1, 2], data_seeds)
    ]
    together = train_together(cfgs, [tmp_path / f"ens{i}" for i in range(3)])
    assert calls == [3, 3, 3, 3]
    for t in together:
        assert not isinstance(t, Exception), t
        assert len(t.history) == 4 and all("valid" in row for row in t.history)



def test_a_failing_vmapped_validation_falls_back_to_each_members_evaluate(tmp_path, monkeypatch):
    """If the vmapped validation raises (an operator vmap cannot run), it is tried once, and every
    member evaluates alone from then on: the same validation metrics as with it switched off."""
    from mmib.train import ensemble

    cfgs = _configs("concat", [0, 1], "model.dropout=0.0", epochs=3, patience=5)
    monkeypatch.setattr(ensemble._Validation, "applies", staticmethod(lambda active: False))
    off = train_together(cfgs, [tmp_path / f"off{i}" for i in range(2)])
    monkeypatch.undo()
    attempts = []

    def failing(self, *args):
        attempts.append(1)
        raise RuntimeError("no batching rule")

    monkeypatch.setattr(ensemble._Validation, "__call__", failing)
    fell_back = train_together(cfgs, [tmp_path / f"fb{i}" for i in range(2)])
    assert attempts == [1]
    for a, b in zip(off, fell_back):
        assert not isinstance(b, Exception), b
        assert [r["valid"] for r in b.history] == [r["valid"] for r in a.history]
        assert b.test == a.test
