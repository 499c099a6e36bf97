import numpy as np
import pytest
import torch

from mmib.data.dataset import DatasetSpec, GroundTruth, MultimodalDataset, TaskSpec
from mmib.errors import DataError


def _ds(n=10, **kw):
    g = torch.Generator().manual_seed(0)
    args = dict(
        name="t",
        features={"a": torch.randn(n, 3, generator=g), "b": torch.randn(n, 4, 2, generator=g)},
        y=torch.randn(n),
        task=TaskSpec("regression"),
        splits={"train": np.arange(0, 6), "valid": np.arange(6, 8), "test": np.arange(8, n)},
        lengths={"b": torch.tensor([4, 3, 2, 1, 4, 4, 2, 0, 1, 4])[:n]},
    )
    args.update(kw)
    return MultimodalDataset(**args)


def test_spec_and_summary():
    ds = _ds()
    spec = ds.spec
    assert spec.names == ("a", "b")
    assert spec["a"].dim == 3 and not spec["a"].sequence
    assert spec["b"].dim == 2 and spec["b"].sequence and spec["b"].max_len == 4
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    assert "6/2/2 train/valid/test" in ds.summary()


def test_batches_cover_split_once_and_keep_alignment():
    ds = _ds()
    g = torch.Generator().manual_seed(1)
    seen = []
    for batch in ds.batches("train", 4, shuffle=True, generator=g):
        assert torch.equal(batch.features["a"], ds.features["a"][batch.index])
        assert torch.equal(batch.y, ds.y[batch.index])
        assert torch.equal(batch.lengths["b"], ds.lengths["b"][batch.index])
        seen.extend(batch.index.tolist())
    assert sorted(seen) == list(range(6))
    assert ds.num_batches("train", 4) == 2
    assert [len(b) for b in ds.batches("train", 4, drop_last=True)] == [4]


def test_mask_from_lengths():
    ds = _ds()
    batch = ds.take(torch.tensor([2, 7]))
    mask = batch.mask("b")
    assert mask.tolist() == [[True, True, False, False], [False, False, False, False]]
    assert batch.mask("a") is None


def test_standardize_uses_train_split_only_and_ignores_padding():
    n = 10
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, 2)
    x[:, 1] = 5.0  # constant feature
    ds = _ds(features={"a": x.clone()}, lengths=None)
    st = ds.standardize()
    train = x[:6, 0]
    assert st.mean["a"][0] == pytest.approx(float(train.mean()))
    assert st.std["a"][0] == pytest.approx(float(train.std(unbiased=False)))
    assert st.std["a"][1] == 1.0  # constant: std kept at 1, values map to 0
    assert torch.allclose(ds.features["a"][:, 1], torch.zeros(n))
    assert float(ds.features["a"][:6, 0].mean()) == pytest.approx(0.0, abs=1e-6)


def test_standardize_sequences_counts_valid_steps_and_keeps_padding_zero():
    seq = torch.zeros(3, 3, 1)
    seq[0, :2, 0] = torch.tensor([1.0, 3.0])
    seq[1, :1, 0] = torch.tensor([5.0])
    seq[2, :3, 0] = 100.0
    ds = MultimodalDataset("s", {"s": seq}, torch.zeros(3), TaskSpec("regression"),
                           {"train": [0, 1], "test": [2]}, lengths={"s": [2, 1, 3]})
    st = ds.standardize()
    assert float(st.mean["s"][0]) == pytest.approx(3.0)  # mean of 1, 3, 5
    assert float(ds.features["s"][0, 2, 0]) == 0.0 and float(ds.features["s"][1, 1, 0]) == 0.0


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(features={"a": torch.zeros(9, 3)}, lengths=None), "has 9 samples but y has 10"),
        (dict(features={"a": torch.zeros(10)}, lengths=None), "expected (N, D)"),
        (dict(splits={"train": [0, 1], "test": [1, 2]}), "splits overlap"),
        (dict(splits={"train": [0, 11]}), "outside"),
        (dict(splits={"valid": [0]}), "train split is empty"),
        (dict(splits={"train": [0], "dev": [1]}), "unknown split"),
        (dict(lengths={"b": torch.full((10,), 5)}), "must lie in [0, 4]"),
        (dict(lengths={"zz": torch.ones(10)}), "unknown modality"),
        (dict(y=torch.tensor([0, 1, 2] + [0] * 7), task=TaskSpec("binary")), "labels out of range"),
        (dict(y=torch.full((10,), 0.5), task=TaskSpec("multiclass", 3)), "whole class numbers"),
        (dict(y=torch.full((10,), float("nan"))), "NaN/inf"),
    ],
)
def test_validation_errors_name_the_problem(kw, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        _ds(**kw)


def test_nonfinite_counted_or_replaced_with_warning():
    x = torch.zeros(10, 3)
    x[0, 0] = float("nan")
    x[1, :2] = float("-inf")
    with pytest.raises(DataError, match=r"modality 'a' has 1 NaN and 2 inf values"):
        _ds(features={"a": x.clone()}, lengths=None)
    with pytest.warns(UserWarning, match="replaced 1 NaN and 2 inf"):
        ds = _ds(features={"a": x.clone()}, lengths=None, replace_nonfinite=True)
    assert torch.isfinite(ds.features["a"]).all()


def test_multilabel_and_task_spec():
    y = torch.tensor([[0, 1], [1, 0]] * 5, dtype=torch.float32)
    ds = _ds(y=y, task=TaskSpec("multilabel", label_names=("p", "q")))
    assert ds.task.output_dim == 2
    with pytest.raises(DataError, match="only 0 and 1"):
        _ds(y=y * 2, task=TaskSpec("multilabel", label_names=("p", "q")))
    with pytest.raises(DataError, match="unknown task kind"):
        TaskSpec("ranking")  # type: ignore[arg-type]
    assert TaskSpec("binary").num_classes == 2


def test_ground_truth_slices_undo_standardisation():
    x = torch.randn(10, 4) * 3 + 1
    gt = GroundTruth(slices={"p": ("a", 1, 3)}, relevant=("p",))
    ds = _ds(features={"a": x.clone()}, lengths=None, ground_truth=gt)
    ds.standardize()
    torch.testing.assert_close(gt.get(ds, "p"), x[:, 1:3], rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="unknown ground-truth part"):
        gt.get(ds, "zz")


def test_select_keeps_modalities_or_makes_ground_truth_parts_modalities():
    gt = GroundTruth(slices={"p": ("a", 0, 2), "q": ("a", 2, 3)}, relevant=("p",))
    oracle = torch.arange(10.0)
    ds = _ds(ground_truth=gt, meta={"oracle": oracle})
    only_b = ds.select(["b"])
    assert only_b.modalities == ("b",) and torch.equal(only_b.lengths["b"], ds.lengths["b"])
    parts = ds.select(["p", "b"])
    assert parts.modalities == ("p", "b") and parts.spec["p"].dim == 2 and not parts.spec["p"].sequence
    assert torch.equal(parts.features["p"], ds.features["a"][:, :2])
    assert torch.equal(parts.y, ds.y) and torch.equal(parts.splits["test"], ds.splits["test"])
    assert parts.meta["oracle"] is oracle  # row-aligned side data survive the view
    assert torch.equal(parts.ground_truth.get(parts, "q"), ds.features["a"][:, 2:3])  # still probe-able
    with pytest.raises(DataError, match="cannot select 'z'; modalities and ground-truth parts: a, b, p, q"):
        ds.select(["z"])
    with pytest.raises(DataError, match="twice"):
        ds.select(["a", "a"])
    ds.standardize()
    with pytest.raises(DataError, match="before standardising"):
        ds.select(["a"])


def test_every_dataset_takes_select_through_the_loader():
    from mmib.data.registry import load_dataset
    from mmib.errors import ConfigError

    sim = load_dataset("sim-i", n_samples=400, select="a0,a1")
    raw = load_dataset("sim-i", n_samples=400, standardize=False)
    assert sim.modalities == ("a0", "a1") and sim.spec["a0"].dim == 200
    # the view is standardised with its own training statistics, from the raw part values
    a0 = raw.ground_truth.get(raw, "a0")[raw.splits["train"]]
    assert torch.allclose(sim.standardizer.mean["a0"], a0.mean(0), atol=1e-5)
    with pytest.raises(ConfigError, match="data.select"):
        load_dataset("sim-i", n_samples=400, select=[1])
    with pytest.raises(ConfigError, match="and select, for every dataset"):
        load_dataset("sim-i", n_samples=400, selct="a0")
