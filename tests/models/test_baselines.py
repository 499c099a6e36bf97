import pytest
import torch

from mmib.api import train
from mmib.data import load_dataset
from mmib.data.dataset import Batch, DatasetSpec, ModalitySpec, TaskSpec
from mmib.errors import ConfigError
from mmib.models import build_model, list_models


def test_registry_lists_baselines_and_rejects_unknown_names():
    names = {e.name for e in list_models()}
    assert {"concat", "late"} <= names
    with pytest.raises(ConfigError, match="unknown model 'concatt'.*did you mean 'concat'"):
        build_model("concatt", DatasetSpec.simple({"a": 2}))
    with pytest.raises(ConfigError, match="unknown option 'hiden'.*did you mean 'hidden'"):
        build_model("concat", DatasetSpec.simple({"a": 2}), hiden=3)


@pytest.mark.parametrize("name", ["concat", "late"])
@pytest.mark.parametrize("task", [TaskSpec("regression"), TaskSpec("multiclass", 3),
                                  TaskSpec("multilabel", label_names=("p", "q"))])
def test_output_shapes_for_tasks_and_modalities(name, task):
    spec = DatasetSpec((ModalitySpec("v", 5), ModalitySpec("s", 3, True, 4), ModalitySpec("w", 2)), task)
    model = build_model(name, spec, hidden=8).eval()
    b = 6
    batch = Batch({"v": torch.randn(b, 5), "s": torch.randn(b, 4, 3), "w": torch.randn(b, 2)},
                  {"s": torch.tensor([4, 3, 2, 1, 1, 4])}, None, torch.arange(b))
    out = model(batch)
    expected = (b,) if task.kind == "regression" else (b, task.output_dim)
    assert out.prediction.shape == expected
    assert out.representation.shape == (b, 8 * 3)


def test_concat_learns_sim_i():
    ds = load_dataset("sim-i", n_samples=3000)
    result = train(model="concat", dataset=ds, epochs=30, progress=False, model_options={"hidden": 64, "dropout": 0.5})
    assert result.test["accuracy"] >= 0.75


def test_concat_beats_the_label_spread_on_sim_msa(tiny_msa):
    result = train(model="concat", dataset=tiny_msa, epochs=30, progress=False)
    assert result.test["mae"] < float(tiny_msa.y[tiny_msa.splits["test"]].std())
    assert result.test["corr"] > 0.5


def test_concat_on_sequences(tiny_msa_seq):
    result = train(model="concat", dataset=tiny_msa_seq, epochs=8, progress=False,
                   model_options={"hidden": 16, "encoder": "transformer", "encoders": {"audio": "lstm"}})
    assert result.test["mae"] < float(tiny_msa_seq.y[tiny_msa_seq.splits["test"]].std())


def test_late_fusion_learns_sim_i(tiny_sim):
    result = train(model="late", dataset=tiny_sim, epochs=15, progress=False)
    assert result.test["accuracy"] > 0.65
    assert set(result.history[0]["train"]) == {"loss", "task", "task_x1", "task_x2"}


@pytest.mark.parametrize("late_loss", ["fused", "separate"])
def test_late_fusion_loss_is_on_the_averaged_prediction_or_on_each_head(late_loss):
    torch.manual_seed(0)
    spec = DatasetSpec((ModalitySpec("a", 3), ModalitySpec("b", 2)), TaskSpec("regression"))
    model = build_model("late", spec, hidden=4, late_loss=late_loss).eval()
    batch = Batch({"a": torch.randn(5, 3), "b": torch.randn(5, 2)}, {}, torch.randn(5), torch.arange(5))
    preds = [model(batch).representations[f"pred_{m}"] for m in "ab"]
    fused = (preds[0] + preds[1]).div(2).sub(batch.y).abs().mean()
    separate = (preds[0].sub(batch.y).abs().mean() + preds[1].sub(batch.y).abs().mean()) / 2
    loss = model.objective(batch, "main", "main").total
    assert torch.isclose(loss, fused if late_loss == "fused" else separate)
    with pytest.raises(ConfigError, match="late_loss 'mean' is not one of fused, separate"):
        build_model("late", spec, late_loss="mean")


def test_feature_head_is_one_mlp_on_the_concatenated_features():
    spec = DatasetSpec((ModalitySpec("v", 5), ModalitySpec("s", 3, True, 4)), TaskSpec("multiclass", 3))
    model = build_model("feature-head", spec, head_hidden=7).eval()
    assert [p.shape for p in model.parameters()] == [(7, 8), (7,), (3, 7), (3,)]  # Linear(5+3, 7), Linear(7, 3)
    x_s = torch.randn(2, 4, 3)
    batch = Batch({"v": torch.randn(2, 5), "s": x_s}, {"s": torch.tensor([2, 4])}, None, torch.arange(2))
    out = model(batch)
    assert out.prediction.shape == (2, 3)
    assert torch.allclose(out.representation[0, 5:], x_s[0, :2].mean(0))  # masked mean over valid steps


def test_feature_head_on_the_optimal_parts_beats_the_head_on_the_superfluous_ones():
    good = load_dataset("sim-i", n_samples=3000, select="a0,a1,a2")
    bad = load_dataset("sim-i", n_samples=3000, select="b0,b1,b2")
    acc = {name: train(model="feature-head", dataset=ds, epochs=15, progress=False).test["accuracy"]
           for name, ds in (("good", good), ("bad", bad))}
    assert acc["good"] > 0.8 and acc["bad"] < 0.6  # the label is a threshold of the a-parts only
