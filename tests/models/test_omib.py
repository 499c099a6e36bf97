import math

import pytest
import torch

from mmib.api import train
from mmib.config import TrainConfig
from mmib.data import load_dataset
from mmib.data.dataset import Batch, DatasetSpec, ModalitySpec, TaskSpec
from mmib.errors import ConfigError
from mmib.models import build_model
from mmib.models.omib import ANOMALY_BETA, dynamic_weights, prediction_divergence
from mmib.train.engine import Trainer

SMALL = {"hidden": 32, "latent": 8, "vae_hidden": 32, "head_hidden": 32, "heads": 2}


def batch_of(ds, n=16):
    return ds.take(ds.splits["train"][:n])


def test_dynamic_weights_range_and_direction():
    assert float(dynamic_weights(torch.tensor([0.3, 0.3]))[0]) == pytest.approx(1.0)
    # modality 2 keeps more task information outside xi than modality 1 -> smaller r (less regularised)
    assert float(dynamic_weights(torch.tensor([0.1, 1.0]))[0]) < 1.0
    assert float(dynamic_weights(torch.tensor([1.0, 0.1]))[0]) > 1.0
    extreme = dynamic_weights(torch.tensor([1e-3, 1e3, 1e-3, 0.0]))
    assert extreme.shape == (3,)
    assert bool(((extreme > 0) & (extreme < 2)).all())
    # closed form: 1 - tanh(ln 4)
    assert float(dynamic_weights(torch.tensor([0.5, 2.0]))[0]) == pytest.approx(1 - math.tanh(math.log(4)), rel=1e-5)


def test_prediction_divergence_closed_forms():
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    p = torch.softmax(a, -1)
    expected = float((p * (p.log() - math.log(0.5))).sum())
    assert float(prediction_divergence("binary", a, b)[0]) == pytest.approx(expected, rel=1e-5)
    assert float(prediction_divergence("regression", torch.tensor([3.0]), torch.tensor([1.0]))[0]) == pytest.approx(2.0)
    assert float(prediction_divergence("multilabel", b, b)[0]) == pytest.approx(0.0, abs=1e-7)


def test_r_moves_the_right_way_on_a_constructed_batch(tiny_sim):
    """Head 2 is far more informative than the fused head (confident and correct), head 1 adds
    nothing beyond xi: r for modality 2 must drop below 1; swapping the roles raises it above 1."""
    model = build_model("omib", tiny_sim.spec, beta=1e-3, **SMALL)
    y = tiny_sim.y[:64]
    fused = torch.zeros(64, 2)  # the OMF head is undecided
    informative = torch.nn.functional.one_hot(y, 2).float() * 6.0 - 3.0
    weak = fused + 0.01 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    r = model._weights(fused, {"x1": weak, "x2": informative})
    assert 0 < float(r[0]) < 0.1
    r_swapped = model._weights(fused, {"x1": informative, "x2": weak})
    assert 1.9 < float(r_swapped[0]) < 2.0
    logged = model.on_epoch_end(1, "main")
    assert logged["r_x2"] == pytest.approx((float(r[0]) + float(r_swapped[0])) / 2, rel=1e-5)
    assert model.on_epoch_end(2, "main").get("r_x2") is None  # accumulators reset every epoch


def test_objective_terms_and_r_range_on_real_batch(tiny_sim):
    model = build_model("omib", tiny_sim.spec, beta=0.01, **SMALL)
    batch = batch_of(tiny_sim, 32)
    warm = model.objective(batch, "warmup", "warmup")
    assert set(warm.terms) == {"trb_x1", "trb_x2"}
    main = model.objective(batch, "main", "main")
    assert set(main.terms) == {"omf_task", "trb_x1", "trb_x2", "kl_x1", "kl_x2"}
    main.total.backward()
    logged = model.on_epoch_end(1, "main")
    assert 0 < logged["r_x2"] < 2 and logged["beta"] == pytest.approx(0.01)


def test_warmup_leaves_the_omf_block_untouched(tiny_sim):
    torch.manual_seed(0)
    model = build_model("omib", tiny_sim.spec, beta=1e-3, warmup_epochs=2, **SMALL)
    omf_before = {k: v.clone() for mod in model.omf_modules() for k, v in mod.state_dict().items()}
    enc_before = {k: v.clone() for k, v in model.encoders.state_dict().items()}
    cfg = TrainConfig(epochs=0, batch_size=32, progress=False, weight_decay=1e-2)  # only the warm-up runs
    result = Trainer(model, tiny_sim, cfg).fit()
    assert [h["phase"] for h in result.history] == ["warmup", "warmup"]
    omf_after = {k: v for mod in model.omf_modules() for k, v in mod.state_dict().items()}
    assert omf_before.keys() == omf_after.keys()
    for k in omf_before:
        assert torch.equal(omf_before[k], omf_after[k]), k
    assert any(not torch.equal(enc_before[k], v) for k, v in model.encoders.state_dict().items())


def test_training_plan_phases(tiny_sim):
    cfg = TrainConfig()
    model = build_model("omib", tiny_sim.spec, beta=1e-3, warmup_epochs=3, **SMALL)
    plan = model.training_plan(cfg)
    assert [(p.name, p.epochs) for p in plan] == [("warmup", 3), (("main", None))]
    warm_ids = {id(p) for p in plan[0].stages[0].parameters()}
    assert not any(id(p) in warm_ids for mod in model.omf_modules() for p in mod.parameters())
    no_warm = build_model("omib", tiny_sim.spec, beta=1e-3, warmup_epochs=0, **SMALL)
    assert [p.name for p in no_warm.training_plan(cfg)] == ["main"]


def test_inference_uses_encoders_and_omf_only(tiny_sim):
    model = build_model("omib", tiny_sim.spec, beta=1e-3, **SMALL).eval()

    def boom(*_):
        raise AssertionError("a TRB head ran at inference")

    for head in model.trb_heads.values():
        head.forward = boom
    batch = batch_of(tiny_sim)
    a, b = model(batch), model(batch)
    assert a.prediction.shape == (16, 2) and a.representation.shape == (16, 8)
    assert torch.equal(a.prediction, b.prediction)  # deterministic at evaluation (VAE means)
    assert set(a.representations) == {"z_x1", "z_x2", "zeta_x1", "zeta_x2"}


@pytest.mark.parametrize("options", [{"fusion": "concat"}, {"omf": False}, {"dynamic_r": False}, {"warmup_epochs": 0}])
def test_ablation_options_build_and_train_a_step(tiny_sim, options):
    model = build_model("omib", tiny_sim.spec, beta=1e-3, **{**SMALL, **options})
    obj = model.objective(batch_of(tiny_sim), "main", "main")
    obj.total.backward()
    if options.get("omf") is False:
        assert "kl_x1" not in obj.terms and len(model.vaes) == 0
    if options.get("dynamic_r") is False:
        assert model.on_epoch_end(1, "main")["r_x2"] == 1.0
    if options.get("fusion") == "concat":
        assert model.attention is None


def test_three_modalities_regression_has_two_weights(tiny_msa):
    model = build_model("omib", tiny_msa.spec, beta=1e-3, **SMALL)
    obj = model.objective(batch_of(tiny_msa), "main", "main")
    assert {"kl_text", "kl_audio", "kl_vision"} <= set(obj.terms)
    logged = model.on_epoch_end(1, "main")
    assert {"r_audio", "r_vision"} <= set(logged)
    assert model(batch_of(tiny_msa)).prediction.shape == (16,)


def test_option_errors():
    spec4 = DatasetSpec(tuple(ModalitySpec(n, 3) for n in "abcd"), TaskSpec("binary"))
    with pytest.raises(ConfigError, match="2 or 3 modalities"):
        build_model("omib", spec4)
    build_model("omib", spec4, beta=0.01, **SMALL)  # an explicit beta works for any M
    spec2 = DatasetSpec.simple({"a": 3, "b": 3}, "binary")
    with pytest.raises(ConfigError, match="divisible"):
        build_model("omib", spec2, latent=10, heads=4)
    with pytest.raises(ConfigError, match="fusion"):
        build_model("omib", spec2, fusion="sum")
    with pytest.raises(ConfigError, match="at least 2 modalities"):
        build_model("omib", DatasetSpec.simple({"a": 3}, "binary"))
    model = build_model("omib", spec2, **SMALL)
    batch = Batch({"a": torch.randn(4, 3), "b": torch.randn(4, 3)}, {}, torch.tensor([0, 1, 0, 1]), torch.arange(4))
    with pytest.raises(ConfigError, match="beta is not set"):
        model.objective(batch, "main", "main")


def test_default_beta_is_drawn_from_the_bound_and_recorded(tmp_path, tiny_sim):
    result = train(
        model="omib", dataset=tiny_sim, out=tmp_path / "run", epochs=2, progress=False, batch_size=64,
        model_options={**SMALL, "warmup_epochs": 1, "mine_steps": 30, "mine_batch": 64, "mine_samples": 300},
    )
    logged = [h["model"] for h in result.history if h["phase"] == "main"]
    assert logged and all(0 < m["beta_lower"] <= m["beta"] <= m["beta_upper"] for m in logged)
    assert float(result.model.beta_value) == pytest.approx(logged[0]["beta"])
    # the drawn beta is a buffer: the saved model carries it
    from mmib.api import load_run

    assert float(load_run(tmp_path / "run").model.beta_value) == pytest.approx(logged[0]["beta"])
    assert "beta" in (tmp_path / "run" / "metrics.jsonl").read_text()


def test_omib_learns_sim_i():
    ds = load_dataset("sim-i", n_samples=2000, shared_dim=50, superfluous_dim=50, a1_dim=100, a2_dim=20)
    result = train(model="omib", dataset=ds, epochs=8, progress=False, batch_size=64,
                   model_options={"hidden": 64, "latent": 16, "vae_hidden": 64, "head_hidden": 64, "warmup_epochs": 2,
                                  "beta": 1e-3})
    assert result.test["accuracy"] >= 0.75


def test_svdd_separates_sim_anomaly():
    ds = load_dataset("sim-anomaly", n_samples=1500, shared_dim=20, superfluous_dim=20, a1_dim=40, a2_dim=10)
    assert int(ds.y[ds.splits["train"]].sum()) == 0 and int(ds.y[ds.splits["test"]].sum()) > 0
    result = train(model="omib", dataset=ds, epochs=6, progress=False, patience=6,
                   model_options={"hidden": 64, "latent": 16, "vae_hidden": 64, "head_hidden": 64, "svdd_dim": 16,
                                  "warmup_epochs": 1, "dropout": 0.0})
    assert result.monitor == "normal_score"  # epochs selected without anomaly labels
    assert int(ds.y[ds.splits["valid"]].sum()) == 0
    assert result.test["auc"] >= 0.9
    model = result.model
    assert float(model.beta_value) == pytest.approx(ANOMALY_BETA)  # the anomaly default, not the MINE bound
    assert float(model.scale_omf) > 0 and model.scale_trb.shape == (2,)
    assert model.center_omf.shape == (16,) and float(model.center_omf.abs().min()) >= 0.1 - 1e-6
    assert "center_omf" in model.state_dict() and "center_trb" in model.state_dict()
    scores = model(ds.take(ds.splits["test"])).prediction
    assert scores.shape == (ds.split_size("test"),) and bool((scores >= 0).all())


def test_detach_xi_controls_whether_trb_losses_reach_the_omf_block(tiny_sim):
    batch = batch_of(tiny_sim, 32)
    for detach, reaches in ((True, False), (False, True)):
        torch.manual_seed(0)
        model = build_model("omib", tiny_sim.spec, beta=1e-3, detach_xi=detach, **SMALL)
        obj = model.objective(batch, "main", "main")
        trb = obj.terms["trb_x1"] + obj.terms["trb_x2"]
        grads = torch.autograd.grad(trb, list(model.fuse_out.parameters()), allow_unused=True)
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads) == reaches


def _anomaly_model(**options):
    spec = DatasetSpec((ModalitySpec("x1", 6), ModalitySpec("x2", 5)), TaskSpec("anomaly"))
    return build_model("omib", spec, beta=1e-4, **{**SMALL, "svdd_dim": 8, "dropout": 0.0, **options})


def test_deep_svdd_network_is_bias_free_end_to_end():
    """Ruff et al.: with bias terms the constant map onto the centre c is reachable (zero the fusion
    output and let the head's last layer solve W2 u = c); without them every layer maps 0 to 0."""
    torch.manual_seed(0)
    model = _anomaly_model().eval()
    assert not [n for n, _ in model.named_parameters() if "bias" in n]
    zeros = Batch({"x1": torch.zeros(4, 6), "x2": torch.zeros(4, 5)}, {}, None, torch.arange(4))
    with torch.no_grad():
        xi, _, _ = model._omf_pass(model.encoders(zeros))
        assert float(xi.abs().max()) == 0.0 and float(model.omf_head(xi).abs().max()) == 0.0
    # the collapse of the issue: zero the fusion output weight; xi is then 0 for every input, so the
    # embedding is 0, not the centre (whose coordinates are nudged to |c_k| >= 0.1): scores stay > 0
    model.center_omf.fill_(0.1)
    with torch.no_grad():
        model.fuse_out.weight.zero_()
    x = Batch({"x1": torch.randn(16, 6), "x2": torch.randn(16, 5)}, {}, None, torch.arange(16))
    with torch.no_grad():
        assert float(model(x).prediction.min()) >= 8 * 0.1**2 - 1e-9
    # with biases left in (the earlier variant) the same construction reaches the centre exactly
    torch.manual_seed(0)
    old = _anomaly_model(svdd_bias_free="head").eval()
    with torch.no_grad():
        old.fuse_out.weight.zero_()
        constant = old.omf_head(old.fuse_out.bias.unsqueeze(0))[0]
        old.center_omf.copy_(constant)
    with torch.no_grad():
        assert float(old(x).prediction.max()) <= 1e-10
    # sequence encoders lose their biases too; a pretrained text model is refused
    seq = DatasetSpec((ModalitySpec("x1", 3, sequence=True, max_len=4), ModalitySpec("x2", 5)), TaskSpec("anomaly"))
    lstm = build_model("omib", seq, beta=1e-4, **SMALL)
    assert not [n for n, _ in lstm.named_parameters() if "bias" in n]
    with pytest.raises(ConfigError, match="svdd_bias_free"):
        _anomaly_model(svdd_bias_free="all")


def test_trb_weight_scales_the_main_phase_branch_losses(tiny_sim):
    batch = batch_of(tiny_sim, 32)
    out = {}
    for w in (1.0, 0.3, 0.0):
        torch.manual_seed(0)
        model = build_model("omib", tiny_sim.spec, beta=0.01, trb_weight=w, dynamic_r=False, **SMALL).eval()
        out[w] = model.objective(batch, "main", "main")
    for w, obj in out.items():
        t = obj.terms
        expected = t["omf_task"] + w * (t["trb_x1"] + t["trb_x2"]) + 0.01 * (t["kl_x1"] + t["kl_x2"])
        torch.testing.assert_close(obj.total, expected)
    with pytest.raises(ConfigError, match="trb_weight"):
        build_model("omib", tiny_sim.spec, beta=0.01, trb_weight=-1.0, **SMALL)


def test_std_offset_reaches_the_vaes(tiny_sim):
    model = build_model("omib", tiny_sim.spec, beta=0.01, std_offset=0.0, **SMALL)
    assert all(v.std_offset == 0.0 for v in model.vaes.values())
    assert build_model("omib", tiny_sim.spec, beta=0.01, **SMALL).vaes["x1"].std_offset == 5.0


def test_r_from_held_out_rows_that_no_loss_trains_on(tiny_sim):
    torch.manual_seed(0)
    model = build_model("omib", tiny_sim.spec, beta=0.01, r_from="held_out", r_holdout=0.2, warmup_epochs=1, **SMALL)
    train_rows = tiny_sim.splits["train"]
    held = model.held_out(train_rows)
    assert 0.1 < float(held.float().mean()) < 0.3  # about r_holdout of the rows, the same ones every call
    assert torch.equal(held, model.held_out(train_rows))
    # record which rows reach the encoders in training mode (evaluation and the r measurement run in eval mode)
    used: list[torch.Tensor] = []
    hook = model.encoders.register_forward_hook(lambda mod, args, out: used.append(args[0].index) if mod.training else None)
    result = Trainer(model, tiny_sim, TrainConfig(epochs=2, batch_size=32, progress=False, patience=5)).fit()
    hook.remove()
    trained = torch.cat(used)
    assert not bool(model.held_out(trained).any())  # no loss saw a held-out row
    logged = [h["model"] for h in result.history if h["phase"] == "main"]
    assert all({"D_x1", "D_x2", "r_x2"} <= set(m) for m in logged)
    # the r used in an epoch is the one measured on the held-out rows after the previous epoch
    d = torch.tensor([logged[0]["D_x1"], logged[0]["D_x2"]])
    assert logged[1]["r_x2"] == pytest.approx(float(dynamic_weights(d)[0]), rel=1e-4)
    best = next(h["model"] for h in result.history if h["epoch"] == result.best_epoch)  # restored with its weights
    d_best = torch.tensor([best["D_x1"], best["D_x2"]])
    assert float(model.r_held_out[0]) == pytest.approx(float(dynamic_weights(d_best)[0]), rel=1e-4)
    assert "r_held_out" in model.state_dict()  # restored by --resume
    with pytest.raises(ConfigError, match="r_from 'valid'"):
        build_model("omib", tiny_sim.spec, beta=0.01, r_from="valid", **SMALL)


def test_r_momentum_averages_successive_held_out_measurements(tiny_sim):
    model = build_model("omib", tiny_sim.spec, beta=0.01, r_from="held_out", r_momentum=0.75, **SMALL)
    assert bool(torch.isnan(model.r_held_out).all())  # nothing measured yet: the batches use r = 1
    model._dataset = tiny_sim
    d1 = model.measure_held_out_r()
    first = dynamic_weights(torch.tensor([d1["D_x1"], d1["D_x2"]]))
    torch.testing.assert_close(model.r_held_out, first)  # the first measurement is taken as it is
    with torch.no_grad():
        for p in model.trb_heads.parameters():
            p.mul_(1.5)  # move the branches so that the next measurement differs
    d2 = model.measure_held_out_r()
    second = dynamic_weights(torch.tensor([d2["D_x1"], d2["D_x2"]]))
    torch.testing.assert_close(model.r_held_out, 0.75 * first + 0.25 * second)
    with pytest.raises(ConfigError, match="r_momentum"):
        build_model("omib", tiny_sim.spec, beta=0.01, r_momentum=1.0, **SMALL)
