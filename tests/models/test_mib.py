import json

import pytest
import torch
import torch.nn.functional as F

from mmib.api import load_run, predict, train
from mmib.data.dataset import Batch, DatasetSpec
from mmib.errors import ConfigError
from mmib.models.registry import build_model
from mmib.nn.fusion import FUSIONS, product_of_experts

VARIANTS = ["e-mib", "l-mib", "c-mib", "b-mib"]


SMALL = {"ib_hidden": 64, "hidden": 64, "z_dim": 16}


def _batch(dims: dict[str, int], task: str = "regression", n: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(n, d, generator=g) for m, d in dims.items()}
    y = torch.randn(n, generator=g) if task == "regression" else torch.randint(0, 3, (n,), generator=g)
    return Batch(feats, {}, y, torch.arange(n))


@pytest.mark.parametrize("name", VARIANTS)
def test_trains_on_small_sim_msa_below_label_std(name, tiny_msa, fast_train):
    torch.manual_seed(0)
    result = train(model=name, dataset=tiny_msa, epochs=6, batch_size=32, lr=1e-3, progress=False, model_options=SMALL)
    y_test = tiny_msa.y[tiny_msa.splits["test"]]
    assert result.test["mae"] < 0.75 * float(y_test.std())


@pytest.mark.parametrize("name", VARIANTS)
def test_trains_on_small_sim_i_above_0_7(name, tiny_sim):
    result = train(model=name, dataset=tiny_sim, epochs=6, batch_size=32, progress=False, model_options=SMALL)
    assert result.test["accuracy"] > 0.7


@pytest.mark.parametrize("name", ["e-mib", "l-mib", "c-mib"])
@pytest.mark.parametrize("fusion", list(FUSIONS))
@pytest.mark.parametrize("k", [2, 3, 6])
def test_every_variant_and_fusion_runs_with_2_3_6_modalities(name, fusion, k):
    dims = {f"m{i}": 5 + i for i in range(k)}
    spec = DatasetSpec.simple(dims, "regression")
    opts = {"fusion": fusion, "z_dim": 6, "ib_hidden": 8, "hidden": 8}
    if fusion == "poe" and name == "e-mib":
        with pytest.raises(ConfigError, match="l-mib or c-mib"):
            build_model(name, spec, **opts)
        return
    if fusion == "tensor" and k > 3:
        with pytest.raises(ConfigError, match="lmf"):
            build_model(name, spec, **opts)
        return
    torch.manual_seed(0)
    model = build_model(name, spec, **opts)
    obj = model.objective(_batch(dims), "main", "main")
    assert torch.isfinite(obj.total)
    obj.total.backward()
    model.eval()
    out = model(_batch(dims))
    assert out.prediction.shape == (8,) and out.representation is not None and out.representation.shape[0] == 8


def test_objective_terms_follow_the_equations():
    dims = {"a": 4, "b": 5, "c": 3}
    spec = DatasetSpec.simple(dims, "regression")
    batch = _batch(dims)
    beta = 0.25
    expected_terms = {
        "e-mib": {"task", "kl"},
        "b-mib": {"task", "kl"},
        "l-mib": {"task"} | {f"{t}_{m}" for t in ("task", "kl") for m in dims},
        "c-mib": {"task", "kl"} | {f"{t}_{m}" for t in ("task", "kl") for m in dims},
    }
    for name, names in expected_terms.items():
        torch.manual_seed(0)
        model = build_model(name, spec, beta=0.0 if name == "b-mib" else beta, z_dim=4, ib_hidden=8, hidden=8)
        obj = model.objective(batch, "main", "main")
        assert set(obj.terms) == names, name
        b = 0.0 if name == "b-mib" else beta
        total = obj.terms["task"] + b * obj.terms.get("kl", torch.tensor(0.0))
        for m in dims:
            if f"task_{m}" in obj.terms:
                total = total + obj.terms[f"task_{m}"] + b * obj.terms[f"kl_{m}"]
        torch.testing.assert_close(obj.total, total)
        assert all(float(v.detach()) >= 0 for k, v in obj.terms.items() if k.startswith("kl"))


def test_regression_task_term_is_l1_and_classification_is_cross_entropy():
    dims = {"a": 4, "b": 5}
    torch.manual_seed(0)
    reg = build_model("c-mib", DatasetSpec.simple(dims, "regression"), z_dim=4, ib_hidden=8, hidden=8).eval()
    batch = _batch(dims)
    obj, out = reg.objective(batch, "main", "main"), reg(batch)
    torch.testing.assert_close(obj.terms["task"], (out.prediction - batch.y).abs().mean())
    torch.testing.assert_close(obj.terms["task_a"], (out.representations["pred_a"] - batch.y).abs().mean())
    cls = build_model("c-mib", DatasetSpec.simple(dims, "multiclass", num_classes=3), z_dim=4, ib_hidden=8, hidden=8).eval()
    batch = _batch(dims, "multiclass")
    obj, out = cls.objective(batch, "main", "main"), cls(batch)
    torch.testing.assert_close(obj.terms["task"], F.cross_entropy(out.prediction, batch.y))
    assert out.prediction.shape == (8, 3)


def test_eval_is_deterministic_and_representation_is_posterior_mean():
    dims = {"a": 4, "b": 5}
    torch.manual_seed(0)
    model = build_model("e-mib", DatasetSpec.simple(dims), z_dim=4, ib_hidden=8, hidden=8, std_offset=0.0)
    batch = _batch(dims)
    model.train()
    assert not torch.equal(model(batch).representation, model(batch).representation)
    model.eval()
    out = model(batch)
    assert torch.equal(out.representation, model(batch).representation)
    h = model.encoders(batch)
    mu, _ = model.bottleneck.posterior(model.fusion(list(h.values())))
    torch.testing.assert_close(out.representation, mu)


def test_l_mib_poe_fuses_the_posteriors_with_the_prior_expert():
    dims = {"a": 4, "b": 5, "c": 6}
    torch.manual_seed(0)
    model = build_model("l-mib", DatasetSpec.simple(dims), fusion="poe", z_dim=4, ib_hidden=8, hidden=8).eval()
    batch = _batch(dims)
    h = model.encoders(batch)
    post = [model.unimodal[m].posterior(h[m]) for m in dims]
    mu, _ = product_of_experts([p[0] for p in post], [p[1] for p in post])
    torch.testing.assert_close(model(batch).representation, mu)


def test_option_errors():
    spec = DatasetSpec.simple({"a": 3, "b": 3})
    with pytest.raises(ConfigError, match="use e-mib"):
        build_model("b-mib", spec, beta=0.1)
    with pytest.raises(ConfigError, match="beta must be >= 0"):
        build_model("c-mib", spec, beta=-1.0)
    with pytest.raises(ConfigError, match="unknown fusion 'concatt'"):
        build_model("c-mib", spec, fusion="concatt")
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("c-mib", spec, betta=0.1)


def test_larger_beta_gives_smaller_fused_kl(tiny_msa):
    """The KL terms of the last training epoch (as logged) shrink when beta grows 1e-4 -> 1e-1."""
    kls = {}
    for beta in (1e-4, 1e-1):
        run = train(model="c-mib", dataset=tiny_msa, epochs=6, batch_size=32, progress=False, patience=10,
                    model_options={**SMALL, "beta": beta}, seed=0)
        kls[beta] = run.history[-1]["train"]
    assert kls[1e-1]["kl"] < 0.5 * kls[1e-4]["kl"]
    for m in ("text", "audio", "vision"):
        assert kls[1e-1][f"kl_{m}"] < 0.5 * kls[1e-4][f"kl_{m}"]


def test_every_term_is_logged_and_the_run_reloads(tiny_msa, tmp_path):
    out = tmp_path / "run"
    train(model="c-mib", dataset=tiny_msa, out=out, epochs=2, batch_size=64, progress=False,
          model_options={**SMALL, "fusion": "graph"})
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = {"loss", "task", "kl"} | {f"{t}_{m}" for t in ("task", "kl") for m in ("text", "audio", "vision")}
    assert expected <= set(rows[0]["train"])
    run = load_run(out)
    p = predict(run, dataset=tiny_msa, representations=True)
    assert p.representation is not None and p.representation.shape == (tiny_msa.split_size("test"), 16)
    assert {"z_text", "kl", "kl_audio", "pred_vision"} <= set(p.representations)


def test_sequence_inputs_with_transformer_and_lstm_encoders(tiny_msa_seq):
    result = train(model="c-mib", dataset=tiny_msa_seq, epochs=1, batch_size=32, progress=False,
                   model_options={**SMALL, "encoders": {"text": "transformer", "audio": "lstm", "vision": "conv1d"}})
    assert result.model.encoders.kinds == {"text": "transformer", "audio": "lstm", "vision": "conv1d"}
    assert torch.isfinite(torch.tensor(result.test["mae"]))


def test_bottleneck_width_is_relative_to_its_input_by_default():
    dims = {"a": 4, "b": 5, "c": 3}
    spec = DatasetSpec.simple(dims)
    c = build_model("c-mib", spec, hidden=32, z_dim=8)
    # unimodal bottlenecks see the 32-d encodings, the fused one the 3 x 8 concatenated z_m: a quarter of each
    assert c.unimodal["a"].body[0].weight.shape == (8, 32) and c.bottleneck.body[0].weight.shape == (6, 24)
    e = build_model("e-mib", spec, hidden=32, z_dim=8, ib_ratio=0.5)
    assert e.bottleneck.body[0].weight.shape == (48, 96)
    fixed = build_model("e-mib", spec, hidden=32, z_dim=8, ib_hidden=1024)  # the reference's fixed width
    assert fixed.bottleneck.body[0].weight.shape == (1024, 96)
    assert isinstance(build_model("e-mib", spec, hidden=32, ib_hidden=0).bottleneck.body, torch.nn.Identity)
    # b-mib is the same network as e-mib: the IB-vs-no-IB comparison differs in beta only
    b = build_model("b-mib", spec, hidden=32, z_dim=8)
    assert [p.shape for p in b.parameters()] == [p.shape for p in build_model("e-mib", spec, hidden=32, z_dim=8).parameters()]
    with pytest.raises(ConfigError, match="ib_ratio > 0"):
        build_model("e-mib", spec, ib_ratio=0)


@pytest.mark.parametrize("name", ["e-mib", "c-mib"])
def test_kl_reduction_and_the_fused_task_weight(name):
    """``mean`` weighs the KL (nats summed over z) by beta / z_dim, as the reference's torch.mean;
    ``fused_task_weight=2`` counts the fused task loss twice, as the reference does."""
    dims = {"a": 4, "b": 5, "c": 3}
    spec = DatasetSpec.simple(dims)
    batch = _batch(dims)
    out = {}
    for reduction, weight in (("sum", 1.0), ("mean", 1.0), ("mean", 2.0)):
        torch.manual_seed(0)
        model = build_model(name, spec, beta=0.5, z_dim=4, ib_hidden=8, hidden=8, kl_reduction=reduction,
                            fused_task_weight=weight).eval()
        out[(reduction, weight)] = model.objective(batch, "main", "main")
    for (reduction, weight), obj in out.items():
        t = obj.terms
        kl = t["kl"] + sum(t[f"kl_{m}"] for m in dims if f"kl_{m}" in t)
        tasks = sum(t[f"task_{m}"] for m in dims if f"task_{m}" in t)
        scale = 1.0 if reduction == "sum" else 1.0 / 4
        torch.testing.assert_close(obj.total, weight * t["task"] + tasks + 0.5 * scale * kl)
    # the logged KL is the same quantity (nats summed over z's dimensions) under either reduction
    torch.testing.assert_close(out[("sum", 1.0)].terms["kl"], out[("mean", 1.0)].terms["kl"])
    with pytest.raises(ConfigError, match="kl_reduction 'max'"):
        build_model(name, spec, kl_reduction="max")


def test_beta_units_are_stated_by_mmib_models_verbose(capsys):
    from mmib.cli import main

    assert main(["models", "-v"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("e-mib"):out.index("l-mib")]
    assert "beta = 0.001  # weight of every KL term; the KL is in nats, summed over z's dimensions" in block
    assert "kl_reduction = 'sum'" in block and "fused_task_weight = 1.0" in block
