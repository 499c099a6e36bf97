import math

import pytest
import torch

from mmib.api import load_run, train
from mmib.config import RunConfig, TrainConfig
from mmib.data.dataset import Batch, DatasetSpec
from mmib.errors import ConfigError
from mmib.models.mcer import MCER, read_label_log
from mmib.models.registry import build_model
from mmib.train import rundir
from mmib.train.engine import Trainer

#: small widths so that the tests stay fast
SMALL = {"hidden": 16, "fusion_dim": 16, "unimodal_dim": 8, "z_dim": 8, "unimodal_z_dim": 4, "ib_hidden": 16,
         "head_hidden": 16, "cross_dim": 8, "cross_layers": 1, "attn_heads": 2, "cross_hidden": 8}


def _batch(dims, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch({m: torch.randn(n, d, generator=g) for m, d in dims.items()}, {}, torch.randn(n, generator=g),
                 torch.arange(n))


def test_small_sim_msa_run_beats_the_label_std_and_logs_labels(tiny_msa, tmp_path):
    torch.manual_seed(0)
    result = train(model="mcer", dataset=tiny_msa, out=tmp_path / "run", epochs=8, batch_size=32, progress=False,
                   model_options={**SMALL, "log_labels": 5})
    y_test = tiny_msa.y[tiny_msa.splits["test"]]
    assert result.test["mae"] < float(y_test.std())
    # every term of eq. 33 and the label statistics are logged per epoch
    first = rundir.read_jsonl(tmp_path / "run" / rundir.METRICS)[0]
    for term in ("task_m", "task_s", "task_c", "L_m", "L_avl", "L_dc", "L_MI", "mi_q", "gate_filter"):
        assert term in first["train"], term
    assert first["model"]["offset_s_text"] == 0.0 and first["model"]["weight_c_vision"] == 0.0
    # generated labels equal the multimodal labels after the first epoch, then move
    rows = read_label_log(tmp_path / "run")
    assert len(rows) == 5 * result.results["epochs_run"]
    views = [f"{t}_{m}" for t in "sc" for m in ("text", "audio", "vision")]
    for r in (r for r in rows if r["epoch"] == 1):
        assert all(r[v] == r["m"] for v in views)
        assert r["m"] == pytest.approx(float(tiny_msa.y[r["index"]]), abs=1e-5)
    later = [r for r in rows if r["epoch"] == 3]
    assert any(abs(r[v] - r["m"]) > 1e-3 for r in later for v in views)
    # a reloaded run predicts (the per-sample label buffers are restored at their size)
    run = load_run(tmp_path / "run")
    assert run.model.labels.generated.shape == (6, len(tiny_msa))


def test_sequences_train_through_the_shared_lstm_steps(tiny_msa_seq):
    torch.manual_seed(0)
    lstm = {**SMALL, "encoder": "lstm"}  # the paper's sLSTM encoders (the default is the masked-mean MLP)
    model = build_model("mcer", tiny_msa_seq.spec, **lstm)
    assert all(model.cross_from_steps.values())  # every sequence modality feeds its sLSTM steps to the BiGRU
    result = train(model="mcer", dataset=tiny_msa_seq, epochs=3, batch_size=32, progress=False, model_options=lstm)
    # epoch i's losses use the labels generated up to epoch i - 1: the weights are 0 until epoch 3
    assert [h["train"]["task_c"] > 0.0 for h in result.history] == [False, False, True]
    assert 0.0 < result.history[-1]["train"]["gate_filter"] < 1.0


def test_resume_restores_generated_labels_and_the_label_log(tmp_path, tiny_msa):
    cfg = TrainConfig(epochs=4, batch_size=64, progress=False, patience=10, seed=1)
    opts = {**SMALL, "log_labels": 3}
    torch.manual_seed(0)
    full = build_model("mcer", tiny_msa.spec, **opts)
    Trainer(full, tiny_msa, cfg, tmp_path / "full", RunConfig(train=cfg)).fit()

    torch.manual_seed(0)
    part = build_model("mcer", tiny_msa.spec, **opts)
    original = part.on_epoch_end

    def interrupt(epoch, phase):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(epoch, phase)

    part.on_epoch_end = interrupt
    with pytest.raises(KeyboardInterrupt):
        Trainer(part, tiny_msa, cfg, tmp_path / "part", RunConfig(train=cfg)).fit()
    resumed = build_model("mcer", tiny_msa.spec, **opts)
    Trainer(resumed, tiny_msa, cfg, tmp_path / "part", RunConfig(train=cfg)).fit(resume=True)
    # the best epoch's weights are restored at the end; the label state came along through the checkpoint
    torch.testing.assert_close(resumed.labels.generated, full.labels.generated)
    assert int(resumed.labels.epoch) == int(full.labels.epoch)
    assert read_label_log(tmp_path / "part") == read_label_log(tmp_path / "full")


def test_model_labels_move_towards_hand_built_centres(tiny_msa):
    """Centres placed by hand around the batch's own representations: s-labels of a view sitting on its
    negative centre fall below y_m; those of a view far more clearly on its positive side than the fused
    reference rise above it (eq. 30 compares the view's relative distance with the reference's)."""
    from mmib.models.base import FitContext

    torch.manual_seed(0)
    model = build_model("mcer", tiny_msa.spec, **SMALL, dropout=0.0, tasks=["m", "s"])
    model.on_phase_start("main", FitContext(tiny_msa, TrainConfig(), torch.device("cpu"), torch.Generator()))
    model.labels.end_epoch()  # epoch 1 done: the next batch gets epoch 2's update
    train_idx = tiny_msa.splits["train"]
    batch = tiny_msa.take(train_idx[tiny_msa.y[train_idx] > 0.5][:16])
    model.train()
    with torch.no_grad():
        x, _ = model._encode(batch, steps=False)
        fused = model.fusion(torch.cat([x[m] for m in tiny_msa.spec.names], -1))
        h = {m: model.s_proj[m](x[m]) for m in tiny_msa.spec.names}
    far = 10.0
    model.labels.set_centres(None, fused.mean(0), fused.mean(0) + far)  # the fused representation: positive side
    model.labels.set_centres("s_text", h["text"].mean(0) + far, h["text"].mean(0))  # text: negative side
    model.labels.set_centres("s_vision", h["vision"].mean(0), h["vision"].mean(0) + 100 * far)  # far more positive
    model.objective(batch, "main", "main")
    gen = model.labels.labels(batch.index, batch.y)
    assert bool((gen["s_text"] < batch.y).all())  # moved towards the negative side
    assert bool((gen["s_vision"] > batch.y).all())  # relatively more positive than F'_m: moved up
    torch.testing.assert_close(gen["s_audio"], batch.y)  # a view without centres keeps its label


def test_regression_only_and_three_modalities():
    with pytest.raises(ConfigError, match="does not support binary"):
        build_model("mcer", DatasetSpec.simple({"a": 3, "b": 3, "c": 3}, "binary"))
    with pytest.raises(ConfigError, match="regression only"):
        MCER(DatasetSpec.simple({"a": 3, "b": 3, "c": 3}, "multiclass", num_classes=3), MCER.Options())
    with pytest.raises(ConfigError, match="at least 3"):
        build_model("mcer", DatasetSpec.simple({"a": 3, "b": 3}))


@pytest.mark.parametrize("bad, match", [
    ({"tasks": ["s", "c"]}, "contains m"),
    ({"without": ["task"]}, "without"),
    ({"cross_tasks": ["speech"]}, "cross_tasks"),
    ({"cross_readout": "last"}, "cross_readout"),
    ({"mi_anchor": "speech"}, "mi_anchor"),
    ({"alpha": -1.0}, "alpha"),
    ({"cross_dim": 7}, "even"),
])
def test_bad_options_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        build_model("mcer", DatasetSpec.simple({"text": 4, "audio": 3, "vision": 3}), **{**SMALL, **bad})


def test_ablations_build_only_what_they_use():
    dims = {"text": 4, "audio": 3, "vision": 3, "extra": 2}
    spec = DatasetSpec.simple(dims)
    full = build_model("mcer", spec, **SMALL)
    assert len(full.gated) == 6 and len(full.c_head) == 4 and len(full.mi) == 3  # K = 4: all pairs
    ms = build_model("mcer", spec, **SMALL, tasks=["m", "s"])
    assert len(ms.gated) == 0 and len(ms.s_head) == 4
    assert set(ms.labels.view_names) == {f"s_{m}" for m in dims}
    text = build_model("mcer", spec, **SMALL, cross_tasks=["text"])
    assert sorted(text.gated) == ["text__audio", "text__extra", "text__vision"] and list(text.c_head) == ["text"]
    bare = build_model("mcer", spec, **SMALL, without=["dc", "mi"])
    assert len(bare.mi) == 0 and all(len(g.discriminators) == 0 for g in bare.gated.values())
    only_m = build_model("mcer", spec, **SMALL, tasks=["m"])
    assert only_m.labels is None
    for model in (full, ms, text, bare, only_m):
        torch.manual_seed(0)
        obj = model.objective(_batch(dims), "main", "main")
        assert torch.isfinite(obj.total)
        obj.total.backward()
        assert ("L_dc" in obj.terms) == (model is full or model is text)
        assert ("L_MI" in obj.terms) == (model is not bare)
        model.eval()
        assert model(_batch(dims)).prediction.shape == (8,)


def test_dropping_a_term_removes_it_from_the_total():
    spec = DatasetSpec.simple({"text": 4, "audio": 3, "vision": 3})
    batch = _batch({"text": 4, "audio": 3, "vision": 3})
    totals = {}
    for without in ([], ["m"]):
        torch.manual_seed(0)
        model = build_model("mcer", spec, **SMALL, without=without, alpha=1.0, beta=0.0, ib_beta=1.0)
        model.eval()  # deterministic bottlenecks and dropout
        obj = model.objective(batch, "main", "main")
        totals[tuple(without)] = (obj.total, obj.terms["L_m"])
    full, l_m = totals[()]
    torch.testing.assert_close(full - totals[("m",)][0], l_m)


def test_learning_rates_follow_table_iii(tiny_msa):
    model = build_model("mcer", tiny_msa.spec, **SMALL)
    groups = {g.name: g.lr for g in model.training_plan(TrainConfig())[0].stages[0].groups}
    assert groups["main_audio"] == 9e-4 and groups["main_vision"] == 6e-3
    assert groups["main_text"] == 7e-4 and groups["other"] == 7e-4 and groups["mi"] == 7e-4
    own = build_model("mcer", tiny_msa.spec, **SMALL, lr_other=None)
    assert {g.name: g.lr for g in own.training_plan(TrainConfig(lr=0.01))[0].stages[0].groups}["other"] == 0.01
    n = sum(p.numel() for g in model.training_plan(TrainConfig())[0].stages[0].groups for p in g.params)
    assert n == model.num_parameters(trainable_only=True)


def test_local_bert_text_encoder_trains_at_lr_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    from mmib.data.dataset import MultimodalDataset, TaskSpec

    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, type_vocab_size=2)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    g = torch.Generator().manual_seed(0)
    n, length = 40, 8
    ids = torch.randint(2, 30, (n, length), generator=g)
    tokens = torch.stack([ids, torch.ones_like(ids), torch.zeros_like(ids)], 1).float()
    ds = MultimodalDataset(
        "tiny-bert-msa",
        {"text": torch.randn(n, length, 6, generator=g), "audio": torch.randn(n, 5, 4, generator=g),
         "vision": torch.randn(n, 3, generator=g)},
        torch.randn(n, generator=g), TaskSpec("regression"),
        {"train": torch.arange(24), "valid": torch.arange(24, 32), "test": torch.arange(32, n)},
        extras={"text_bert": tokens},
    )
    model = build_model("mcer", ds.spec, **SMALL, encoders={"audio": "lstm"}, text_model=str(tmp_path / "bert"))
    assert model.encoders.kinds == {"text": "bert", "audio": "lstm", "vision": "mlp"}
    # text (bert: no per-step states) feeds its input sequence to the BiGRU; audio its sLSTM steps
    assert model.cross_from_steps == {"text": False, "audio": True, "vision": False}
    groups = {g.name: g.lr for g in model.training_plan(TrainConfig())[0].stages[0].groups}
    assert groups["text_text"] == 4.5e-5 and groups["main_text"] == 7e-4  # the new projection at lr_other
    result = train(model="mcer", dataset=ds, epochs=1, batch_size=8, progress=False,
                   model_options={**SMALL, "text_model": str(tmp_path / "bert")})
    assert math.isfinite(result.test["mae"])


def test_s_mib_beta_is_applied_once_by_default():
    """Eq. 29's L_avl already carries beta; eq. 33's beta must not multiply it again (beta^2 = 1e-6)."""
    spec = DatasetSpec.simple({"text": 4, "audio": 3, "vision": 3})
    batch = _batch({"text": 4, "audio": 3, "vision": 3})
    base = {**SMALL, "beta": 1e-3, "tasks": ["m", "s"], "without": ["mi", "dc"]}
    parts = {}
    for avl_beta in ("once", "twice"):
        for without in (["mi", "dc"], ["mi", "dc", "avl"]):
            torch.manual_seed(0)
            model = build_model("mcer", spec, **{**base, "without": without}, avl_beta=avl_beta)
            model.eval()
            obj = model.objective(batch, "main", "main")
            parts[(avl_beta, len(without))] = (obj.total, obj.terms)
    kl_sum = sum(parts[("once", 2)][1][f"kl_s_{m}"] for m in ("text", "audio", "vision"))
    torch.testing.assert_close(parts[("once", 2)][1]["L_avl"], 1e-3 * kl_sum)  # eq. 29 as logged
    # the S-MIB share of the total: beta * KL (once) against beta^2 * KL (twice)
    torch.testing.assert_close(parts[("once", 2)][0] - parts[("once", 3)][0], 1e-3 * kl_sum)
    torch.testing.assert_close(parts[("twice", 2)][0] - parts[("twice", 3)][0], 1e-6 * kl_sum)
    with pytest.raises(ConfigError, match="avl_beta='thrice'"):
        build_model("mcer", spec, **SMALL, avl_beta="thrice")


def test_table_iii_batch_size_is_the_training_default(tmp_path):
    from mmib.api import make_config

    assert make_config("mcer", "sim-msa").train.batch_size == 32
    assert make_config("concat", "sim-msa").train.batch_size == 64  # other models keep the engine default
    # whatever the user sets wins: an override, a keyword, a YAML file's train section (even at 64)
    assert make_config("mcer", "sim-msa", overrides=["batch_size=64"]).train.batch_size == 64
    assert make_config("mcer", "sim-msa", overrides=["train.batch_size=16"]).train.batch_size == 16
    assert make_config("mcer", "sim-msa", batch_size=8).train.batch_size == 8
    (tmp_path / "c.yaml").write_text("train:\n  batch_size: 64\n")
    assert make_config("mcer", "sim-msa", tmp_path / "c.yaml").train.batch_size == 64
    (tmp_path / "d.yaml").write_text("train:\n  lr: 0.01\n")
    assert make_config("mcer", "sim-msa", tmp_path / "d.yaml").train.batch_size == 32
    # a RunConfig passed in with a model name keeps the options it changed from the engine defaults
    base = make_config(data="sim-msa", batch_size=128)
    assert make_config("mcer", config=base).train.batch_size == 128
    # a complete RunConfig (no model name given) is not defaulted again: the user's 64 survives,
    # as compare and sweep hand their planned configs to train()
    chosen = make_config("mcer", "sim-msa", batch_size=64)
    assert make_config(config=chosen).train.batch_size == 64


def test_mi_term_reaches_a_target_only_through_its_entropy():
    """mi_form=stopgrad (default): the likelihood part of L_MI moves the anchor (text) but not the targets,
    so it cannot collapse them; mi_form=joint (the earlier form) moves both."""
    spec = DatasetSpec.simple({"text": 4, "audio": 3, "vision": 3})
    batch = _batch({"text": 4, "audio": 3, "vision": 3})
    for form, targets_move in (("stopgrad", False), ("joint", True)):
        torch.manual_seed(0)
        model = build_model("mcer", spec, **SMALL, mi_form=form, tasks=["m"])
        x, _ = model._encode(batch, steps=False)
        l_mi, _, _ = model._mi(x, batch.y)  # first batch: the GMM memory is empty, so no entropy yet
        grads = {m: torch.autograd.grad(l_mi, list(model.encoders.encoders[m].parameters()), allow_unused=True,
                                        retain_graph=True) for m in spec.names}
        moved = {m: any(g is not None and float(g.abs().sum()) > 0 for g in gs) for m, gs in grads.items()}
        assert moved["text"] and moved["audio"] == targets_move and moved["vision"] == targets_move
    with pytest.raises(ConfigError, match="mi_form='both'"):
        build_model("mcer", spec, **SMALL, mi_form="both")
