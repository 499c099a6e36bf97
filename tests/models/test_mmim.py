"""MMIM: construction, the two-stage plan through the real engine, robustness, scores, persistence."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from mmib.api import load_run, train
from mmib.config import TrainConfig
from mmib.data.dataset import Batch, DatasetSpec, ModalitySpec, MultimodalDataset, TaskSpec
from mmib.data.synthetic import make_sim_msa
from mmib.errors import ConfigError
from mmib.models import build_model, list_models
from mmib.models.base import Phase
from mmib.models.mmim import MMIM, fusion_scores
from mmib.train.engine import Trainer

SMALL = {"hidden": 8, "fusion_hidden": 16}


def small_msa(n_train: int = 48, seed: int = 0, seq_len: int | None = None) -> MultimodalDataset:
    ds = make_sim_msa(n_train=n_train, n_valid=16, n_test=16, seed=seed, seq_len=seq_len)
    ds.standardize()
    return ds


def quick(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 16, "progress": False, "checkpoint": False, **kw})


def q_ids(model: MMIM) -> set[int]:
    return {id(p) for p in model.predictor_parameters()}


# --------------------------------------------------------------------- construction
def test_registered_and_rejects_anomaly():
    assert "mmim" in {e.name for e in list_models()}
    with pytest.raises(ConfigError, match="does not support anomaly"):
        build_model("mmim", DatasetSpec.simple({"a": 3, "b": 2}, "anomaly"))


def test_defaults_follow_table3_mosi():
    o = MMIM.Options()
    assert (o.alpha, o.beta, o.lr_lld, o.grad_clip, o.memory_batches, o.hidden, o.fusion_hidden) == (
        0.3, 0.1, 5e-3, 5.0, 1, 32, 128)


def test_anchor_defaults_to_text_else_first_and_pairs():
    spec = DatasetSpec.simple({"audio": 3, "text": 5, "vision": 4})
    m = build_model("mmim", spec, **SMALL)
    assert m.anchor == "text" and m.pairs == [("text", "audio"), ("text", "vision")]
    m = build_model("mmim", DatasetSpec.simple({"a": 3, "b": 2, "c": 2, "d": 2}), **SMALL)
    assert m.anchor == "a" and len(m.pairs) == 3 and len(m.predictors) == 3
    m = build_model("mmim", spec, anchor="vision", pairs="all", **SMALL)
    assert m.pairs == [("vision", "audio"), ("vision", "text"), ("audio", "text")]
    assert set(m.entropy) == {"audio", "text"}
    with pytest.raises(ConfigError, match="anchor='speech' is not a modality"):
        build_model("mmim", spec, anchor="speech")
    with pytest.raises(ConfigError, match="pairs='some'"):
        build_model("mmim", spec, pairs="some")
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        build_model("mmim", spec, beta=-1)


def test_one_modality_has_no_pairs_and_one_stage():
    m = build_model("mmim", DatasetSpec.simple({"a": 3}), **SMALL)
    assert m.pairs == [] and not m.use_ba and len(m.predictors) == 0
    [phase] = m.training_plan(TrainConfig())
    assert [s.name for s in phase.stages] == ["main"]


@pytest.mark.parametrize(
    "task", [TaskSpec("regression"), TaskSpec("binary"), TaskSpec("multiclass", 4), TaskSpec("multilabel", label_names=("p", "q"))]
)
def test_output_shapes_scores_and_components(task):
    spec = DatasetSpec((ModalitySpec("text", 5), ModalitySpec("audio", 3, True, 6), ModalitySpec("vision", 2)), task)
    model = build_model("mmim", spec, **SMALL).eval()
    b = 6
    batch = Batch({"text": torch.randn(b, 5), "audio": torch.randn(b, 6, 3), "vision": torch.randn(b, 2)},
                  {"audio": torch.tensor([6, 3, 2, 1, 1, 6])}, None, torch.arange(b))
    out = model(batch)
    assert out.prediction.shape == ((b,) if task.kind == "regression" else (b, task.output_dim))
    assert out.representation.shape == (b, 16)
    for m in ("text", "audio", "vision"):
        s = out.representations[f"score_{m}"]
        assert s.shape == (b,) and torch.all(s >= math.exp(-1) - 1e-6) and torch.all(s <= math.e + 1e-6)
    expected = {"regression": 2, "binary": 2, "multiclass": 4, "multilabel": 1}[task.kind]
    assert model.num_components == expected
    assert all(e.num_components == expected for e in model.entropy.values())


def test_gmm_components_by_polarity_and_class():
    reg = build_model("mmim", DatasetSpec.simple({"a": 2, "b": 2}), **SMALL)
    assert reg.components(torch.tensor([1.5, -0.2, 0.0])).tolist() == [0, 1, -1]
    single = build_model("mmim", DatasetSpec.simple({"a": 2, "b": 2}), gmm=False, **SMALL)
    assert single.components(torch.tensor([1.5, -0.2, 0.0])).tolist() == [0, 0, 0]
    cls = build_model("mmim", DatasetSpec.simple({"a": 2, "b": 2}, "multiclass", 3), **SMALL)
    assert cls.components(torch.tensor([2, 0, 1])).tolist() == [2, 0, 1]


def test_training_plan_groups_learning_rates_and_clip():
    m = build_model("mmim", DatasetSpec.simple({"text": 4, "audio": 3, "vision": 2}), lr_main=2e-3, **SMALL)
    [phase] = m.training_plan(TrainConfig(lr=1e-3))
    assert phase.epochs is None and [s.name for s in phase.stages] == ["lld", "main"]
    lld, main = phase.stages
    assert {id(p) for p in lld.parameters()} == q_ids(m)
    assert [g.lr for g in lld.groups] == [5e-3] and [g.lr for g in main.groups] == [2e-3]
    main_ids = {id(p) for p in main.parameters()}
    assert not main_ids & q_ids(m) and main_ids | q_ids(m) == {id(p) for p in m.parameters()}
    assert lld.clip_grad == 5.0 and main.clip_grad == 5.0
    [phase] = m.training_plan(TrainConfig(clip_grad=1.0))
    assert all(s.clip_grad == 1.0 for s in phase.stages)


# --------------------------------------------------------------------- two stages through the engine
def test_real_trainer_stage_lld_moves_only_q_and_stage_main_never_moves_q():
    """Requirement 7: snapshot all parameters whenever the engine enters a stage; the change
    made by stage ``lld`` is confined to q, the change made by stage ``main`` leaves q untouched."""
    ds = small_msa()
    torch.manual_seed(0)
    model = build_model("mmim", ds.spec, **SMALL)
    names = dict(model.named_parameters())
    q = {n for n, p in names.items() if id(p) in q_ids(model)}
    assert q and len(q) < len(names)
    snapshots: list[tuple[str, dict[str, torch.Tensor], int]] = []
    original = model.objective

    def recording(batch, phase, stage):
        grad_enabled = []
        hook = model.encoders.register_forward_hook(lambda *a: grad_enabled.append(torch.is_grad_enabled()))
        snapshots.append((stage, {n: p.detach().clone() for n, p in names.items()}, int(model.entropy["audio"].memory_count)))
        try:
            out = original(batch, phase, stage)
        finally:
            hook.remove()
        assert grad_enabled == [stage == "main"]  # stage lld runs the encoders without autograd
        return out

    model.objective = recording
    result = Trainer(model, ds, quick()).fit()
    snapshots.append(("end", {n: p.detach().clone() for n, p in names.items()}, 0))
    assert [s for s, _, _ in snapshots[:4]] == ["lld", "main", "lld", "main"]
    lld_moved, main_moved = set(), set()
    for (stage, before, mem_before), (_, after, mem_after) in zip(snapshots, snapshots[1:]):
        changed = {n for n in names if not torch.equal(before[n], after[n])}
        if stage == "lld":
            assert changed <= q, changed - q
            lld_moved |= changed
        else:
            assert not changed & q, changed & q
            main_moved |= changed
    assert lld_moved == q  # every predictor parameter learned
    assert main_moved == set(names) - q  # and everything else did too
    assert {"lld/lld", "main/task", "main/cpc", "main/ba", "main/entropy"} <= set(result.history[0]["train"])


@pytest.mark.parametrize("keep", ["lld", "main"])
def test_real_trainer_with_one_stage_only(keep, monkeypatch):
    """One epoch of the real Trainer with only one of the two stages: the other side stays bit-identical."""
    ds = small_msa()
    torch.manual_seed(0)
    model = build_model("mmim", ds.spec, **SMALL)
    plan = model.training_plan
    monkeypatch.setattr(model, "training_plan",
                        lambda cfg: [Phase(p.name, [s for s in p.stages if s.name == keep]) for p in plan(cfg)])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    Trainer(model, ds, quick()).fit()
    q = q_ids(model)
    for n, p in model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        assert moved == ((id(p) in q) == (keep == "lld")), n
    memory = model.entropy["audio"]
    assert int(memory.memory_count) == (1 if keep == "main" else 0)  # only stage main feeds the memory


# --------------------------------------------------------------------- robustness (requirement 4)
def _assert_finite_training(ds: MultimodalDataset, batch_size: int, **options) -> None:
    torch.manual_seed(0)
    result = train(model="mmim", dataset=ds, epochs=2, batch_size=batch_size, progress=False, checkpoint=False,
                   model_options={**SMALL, **options})
    for row in result.history:
        assert all(math.isfinite(v) for v in row["train"].values()), row["train"]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert all(math.isfinite(v) for v in result.test.values() if not (isinstance(v, float) and math.isnan(v)))


@pytest.mark.parametrize("options", [{}, {"memory_batches": 0}, {"target_project": None}])
def test_batch_size_two_is_finite(options):
    _assert_finite_training(small_msa(n_train=24), batch_size=2, **options)


def test_constant_features_are_finite():
    ds = make_sim_msa(n_train=40, n_valid=8, n_test=8, seed=0)
    for m in ds.features:
        ds.features[m].fill_(0.5)
    ds.standardize()
    _assert_finite_training(ds, batch_size=8)
    _assert_finite_training(ds, batch_size=8, memory_batches=0)


def test_one_polarity_class_only_is_finite():
    ds = small_msa(n_train=40)
    ds.y = ds.y.abs() + 0.1  # every sample positive
    _assert_finite_training(ds, batch_size=8)
    _assert_finite_training(ds, batch_size=8, memory_batches=0)
    ds.y = -ds.y  # every sample negative
    _assert_finite_training(ds, batch_size=8)


def test_sequences_with_lstm_batch_two_finite():
    _assert_finite_training(small_msa(n_train=16, seq_len=5), batch_size=2)


# --------------------------------------------------------------------- ablation switches (requirement 6)
@pytest.mark.parametrize(
    "options, stages, terms",
    [
        ({"ba": False}, ["main"], {"task", "cpc"}),
        ({"cpc": False}, ["lld", "main"], {"main/task", "main/ba"}),
        ({"ba": False, "cpc": False}, ["main"], {"task"}),
        ({"memory_batches": 0}, ["lld", "main"], {"main/entropy"}),
        ({"gmm": False}, ["lld", "main"], {"main/entropy"}),
    ],
)
def test_ablation_switches(options, stages, terms):
    ds = small_msa()
    model = build_model("mmim", ds.spec, **SMALL, **options)
    assert [s.name for s in model.training_plan(TrainConfig())[0].stages] == stages
    result = Trainer(model, ds, quick()).fit()
    logged = set(result.history[0]["train"])
    assert terms <= logged
    if not model.cpc:
        assert not any(k.startswith("score_") for k in model(ds.take(torch.arange(4))).representations)
    if options.get("gmm") is False:
        assert model.num_components == 1
    if "memory_batches" in options:
        # without memory the entropy term is used from the first batch on
        assert result.history[0]["train"]["main/entropy"] != 0.0


# --------------------------------------------------------------------- learning, persistence, scores
def test_mmim_learns_sim_i(tiny_sim):
    result = train(model="mmim", dataset=tiny_sim, epochs=15, lr=1e-3, progress=False, checkpoint=False)
    assert result.test["accuracy"] > 0.75


def test_mmim_beats_the_label_spread_on_sim_msa(tiny_msa):
    result = train(model="mmim", dataset=tiny_msa, epochs=15, batch_size=32, progress=False, checkpoint=False)
    assert result.test["mae"] < 0.75 * float(tiny_msa.y[tiny_msa.splits["test"]].std())
    assert result.test["corr"] > 0.5


def test_memory_is_saved_and_scores_via_api_and_cli(tmp_path, capsys):
    from mmib.cli import main

    ds = small_msa()
    out = tmp_path / "run"
    result = train(model="mmim", dataset=ds, out=out, epochs=2, batch_size=16, progress=False,
                   model_options=SMALL)
    run = load_run(out)
    for m in ("audio", "vision"):
        saved, trained = run.model.entropy[m], result.model.entropy[m]
        assert saved.memory.shape[1] == 16 and int(saved.memory_count) == 1
        assert torch.equal(saved.memory, trained.memory) and torch.equal(saved.memory_labels, trained.memory_labels)

    scores = fusion_scores(out, dataset=ds, split="test")
    assert set(scores.scores) == {"text", "audio", "vision"}
    assert all(v.shape == (16,) for v in scores.scores.values())
    assert torch.equal(scores.index, ds.splits["test"])
    rows = scores.rows()
    assert len(rows) == 16 and {"index", "prediction", "y", "score_text"} <= set(rows[0])
    with pytest.raises(ConfigError, match="needs an mmim model"):
        fusion_scores(build_model("concat", ds.spec), dataset=ds)

    rng = np.random.default_rng(0)
    npz = tmp_path / "new.npz"
    np.savez(npz, text=rng.normal(size=(3, 128)), audio=rng.normal(size=(3, 74)), vision=rng.normal(size=(3, 47)))
    csv_path = tmp_path / "pred.csv"
    assert main(["predict", str(out), "--input", str(npz), "--explain", "-o", str(csv_path)]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 3
    for m in ("text", "audio", "vision"):
        assert math.exp(-1) - 1e-6 <= float(rows[0][f"score_{m}"]) <= math.e + 1e-6


class _Interrupt(Exception):
    pass


def test_resume_restores_the_memory(tmp_path, monkeypatch):
    """An interrupted run resumed from its checkpoint ends exactly like an uninterrupted one,
    memory buffers included (the memory is part of the model's state)."""
    ds = small_msa()
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, patience=10)
    torch.manual_seed(0)
    full = build_model("mmim", ds.spec, **SMALL)
    Trainer(full, ds, cfg, run_dir=tmp_path / "full").fit()

    save = Trainer._save_checkpoint

    def save_then_stop(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise _Interrupt

    torch.manual_seed(0)
    first = build_model("mmim", ds.spec, **SMALL)
    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_stop)
    with pytest.raises(_Interrupt):
        Trainer(first, ds, cfg, run_dir=tmp_path / "cut").fit()
    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    assert int(first.entropy["audio"].memory_count) == 1

    torch.manual_seed(123)  # a fresh process: different init, empty memory
    resumed = build_model("mmim", ds.spec, **SMALL)
    assert resumed.entropy["audio"].memory.shape[1] == 0
    Trainer(resumed, ds, cfg, run_dir=tmp_path / "cut").fit(resume=True)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_with_a_local_bert_text_encoder(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, type_vocab_size=2)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    n, L = 40, 8
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 30, (n, L), generator=g)
    ids[:, 0] = 1
    tokens = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], dim=1).float()
    y = ids[:, 1].float() / 30 - 0.5
    ds = MultimodalDataset("tiny-text", {"text": torch.randn(n, 6, generator=g), "audio": torch.randn(n, 5, generator=g)},
                           y, TaskSpec("regression"),
                           {"train": torch.arange(24), "valid": torch.arange(24, 32), "test": torch.arange(32, n)},
                           extras={"text_bert": tokens})
    model = build_model("mmim", ds.spec, text_model=str(tmp_path / "bert"), **SMALL)
    assert model.encoders.kinds["text"] == "bert" and model.anchor == "text"
    [phase] = model.training_plan(TrainConfig(text_lr=5e-5))
    lld, main = phase.stages
    assert {g.name: g.lr for g in main.groups}["text"] == 5e-5
    backbone = model.encoders.encoders["text"].backbone
    # stage lld needs no gradient through BERT: its parameters get none
    model.objective(ds.take(torch.arange(8)), "main", "lld").total.backward()
    assert all(p.grad is None for p in backbone.parameters())
    assert all(p.grad is not None for p in model.predictor_parameters())
    result = Trainer(model, ds, quick(batch_size=8)).fit()
    assert math.isfinite(result.history[0]["train"]["main/loss"])


# --------------------------------------------------------------------- the BA term cannot collapse what it measures
def _h_variance_per_epoch(ds, epochs: int, **options) -> list[dict[str, float]]:
    """Total variance (sum over dimensions) of every h_m on the training split after each epoch."""
    from mmib.train.engine import predict, seed_everything

    seed_everything(0)
    model = build_model("mmim", ds.spec, **options)
    rows: list[dict[str, float]] = []

    def record(epoch, row):
        reps = predict(model, ds, "train", representations=True).representations
        rows.append({m: float(reps[m].var(0).sum()) for m in ds.spec.names})

    Trainer(model, ds, TrainConfig(epochs=epochs, batch_size=16, patience=epochs, progress=False, checkpoint=False,
                                   weight_decay=1e-4), epoch_callback=record).fit()
    return rows


#: Floor on the total variance of each h_m through training on sim-msa (it starts near 0.9-1.3).
VARIANCE_FLOOR = 0.5


def test_ba_term_cannot_collapse_the_representations_it_measures(tiny_msa):
    """With the default ``ba_form=stopgrad`` the total variance of every h_m stays above the floor
    through training on sim-msa (the slow test below shows the previous form falling through it)."""
    kept = _h_variance_per_epoch(tiny_msa, 8)
    assert min(v for row in kept for v in row.values()) > VARIANCE_FLOOR, kept


@pytest.mark.slow
def test_joint_ba_form_collapses_the_targets(tiny_msa):
    """The previous ``joint`` form, whose likelihood gradient reaches the targets, shrinks h_audio and
    h_vision below the floor within 12 epochs (full-size sim-msa: 1.2 -> 0.03 in 14 epochs, q's
    log-variance near -7), while the default form keeps them above it over the same epochs."""
    collapsed = _h_variance_per_epoch(tiny_msa, 12, ba_form="joint")
    assert min(collapsed[-1]["audio"], collapsed[-1]["vision"]) < VARIANCE_FLOOR, collapsed[-1]
    assert collapsed[-1]["text"] > VARIANCE_FLOOR  # the anchor is not what collapses
    kept = _h_variance_per_epoch(tiny_msa, 12)
    assert min(v for row in kept for v in row.values()) > VARIANCE_FLOOR, kept


def test_stopgrad_detaches_only_the_target_side_of_the_likelihood():
    spec = DatasetSpec.simple({"text": 5, "audio": 4, "vision": 3})
    g = torch.Generator().manual_seed(0)
    batch = Batch({m: torch.randn(16, d, generator=g) for m, d in (("text", 5), ("audio", 4), ("vision", 3))}, {},
                  torch.randn(16, generator=g), torch.arange(16))
    grads = {}
    for form in ("stopgrad", "joint"):
        torch.manual_seed(0)
        model = build_model("mmim", spec, **SMALL, ba_form=form, memory_batches=0, cpc=False)
        h = model.encoders(batch)
        t = model._targets(h)
        lld = sum(model._lld_terms(h, t, detach_target=form == "stopgrad").values())
        lld.backward()
        grads[form] = {m: sum(float(p.grad.abs().sum()) for p in model.encoders.encoders[m].parameters()
                              if p.grad is not None) for m in spec.names}
    assert grads["stopgrad"]["text"] > 0 and grads["stopgrad"]["audio"] == 0 and grads["stopgrad"]["vision"] == 0
    assert grads["joint"]["audio"] > 0 and grads["joint"]["vision"] > 0
    torch.testing.assert_close(torch.tensor(grads["stopgrad"]["text"]), torch.tensor(grads["joint"]["text"]))


def test_reference_form_predicts_the_raw_target_without_a_log_variance_term():
    spec = DatasetSpec.simple({"text": 5, "audio": 4})
    model = build_model("mmim", spec, **SMALL, ba_form="reference")
    q = model.predictors["text__audio"]
    assert q.predictor.y_dim == SMALL["hidden"] and q.likelihood == "reference"  # raw h_m, not the projection
    assert model.entropy["audio"].dim == 2  # the projection (a quarter of 8) serves the entropy
    x, y = torch.randn(6, SMALL["hidden"]), torch.randn(6, SMALL["hidden"])
    mu, logvar = q.predictor(x)
    expected = (-0.5 * (y - mu).pow(2) * torch.exp(-logvar)).sum(-1).mean()
    torch.testing.assert_close(q.log_likelihood(x, y), expected)
    with pytest.raises(ConfigError, match="ba_form='both'"):
        build_model("mmim", spec, ba_form="both")


def test_epoch_stage_schedule_and_the_reference_weight_decay(tiny_msa):
    from mmib.api import make_config

    assert make_config("mmim", "sim-msa").train.weight_decay == 1e-4  # the reference's Adam weight decay
    assert make_config("mmim", "sim-msa", overrides=["weight_decay=0"]).train.weight_decay == 0.0
    model = build_model("mmim", tiny_msa.spec, **SMALL, stage_schedule="epoch")
    [phase] = model.training_plan(TrainConfig())
    assert phase.stage_schedule == "epoch"
    calls = []
    original = model.objective
    model.objective = lambda batch, ph, stage: (calls.append(stage), original(batch, ph, stage))[1]
    Trainer(model, tiny_msa, quick(batch_size=100)).fit()  # 400 training samples: 4 batches per sweep
    assert calls == ["lld"] * 4 + ["main"] * 4
    with pytest.raises(ConfigError, match="stage_schedule='often'"):
        build_model("mmim", tiny_msa.spec, stage_schedule="often")
