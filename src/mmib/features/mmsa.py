"""Write extracted clips as an MMSA feature pickle (SPEC section 4), readable by ``-d mmsa``.

Layout: ``{"train"|"valid"|"test": {key: array}, "meta": {...}}`` with, per split
(``n`` clips, sequences zero-padded to the settings' maximum lengths):

* ``id`` (list of n str): clip ids; ``raw_text`` (list of n str): transcripts ("" when missing);
* ``text`` (n, Lt, Dt) float32: token embeddings (Dt = 384 for MiniLM);
  ``text_bert`` (n, 3, Lt) int64: token ids, attention mask, segment ids;
  ``text_sentence`` (n, Dt) float32: sentence embedding; ``text_lengths`` (n,): tokens (0 = no transcript);
* ``audio`` (n, La, 25) float32: eGeMAPS LLDs; ``audio_lengths`` (n,): steps (0 = no audio);
  ``audio_functionals`` (n, 88) float32: eGeMAPS functionals;
* ``vision`` (n, Lv, Dv) float32: face features per frame (Dv = 16 mediapipe, 13 opencv);
  ``vision_lengths`` (n,): sampled frames (0 = no video or no face); ``vision_mask`` (n, Lv) bool: frames with a face;
* ``regression_labels`` (n,) float32: the label column (NaN when the CSV has none);
  ``classification_labels`` (n,) int64: 0 negative (< 0), 1 neutral (= 0), 2 positive (> 0), -1 unlabelled;
  ``annotations`` (list of n str): "Negative" / "Neutral" / "Positive".

The loader reads text lengths from ``text_bert``'s attention mask and audio and
vision lengths from ``*_lengths``. A modality left out by ``--modalities`` is
written as ``(n, 1, 1)`` zeros with length 0. ``meta`` holds the extractor
settings (``meta["extractor"]``, which ``load_mmsa_pickle`` puts on
``dataset.meta``), feature names, the split rule and the failure summary.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmib.data.dataset import SPLITS
from mmib.features.extract import ClipResult
from mmib.features.settings import ExtractorSettings

FORMAT = "mmib-extract"
FORMAT_VERSION = 1
ANNOTATIONS = ("Negative", "Neutral", "Positive")


def _pad(seq: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros((length,) + seq.shape[1:], dtype=seq.dtype)
    n = min(length, seq.shape[0])
    out[:n] = seq[:n]
    return out


def text_dim_of(settings: ExtractorSettings) -> int:
    """Hidden size of the settings' text model read from its config.json (no model load)."""
    from mmib.features.text import resolve_text_model

    cfg = json.loads((resolve_text_model(settings.text_model) / "config.json").read_text())
    for key in ("hidden_size", "d_model", "dim"):
        if key in cfg:
            return int(cfg[key])
    raise ValueError(f"cannot tell the hidden size of text model {settings.text_model!r}")


def feature_dims(settings: ExtractorSettings, results: Sequence[ClipResult]) -> dict[str, int]:
    """Widths of every feature key (from the results, else from the extractor definitions)."""
    from mmib.features.audio import FUNCTIONALS_DIM, LLD_DIM
    from mmib.features.vision import MEDIAPIPE_FEATURES, OPENCV_FEATURES

    s = settings.resolved()
    dims: dict[str, int] = {}
    for r in results:
        for k in ("text", "text_sentence", "audio", "audio_functionals", "vision"):
            if k in r.features and k not in dims:
                dims[k] = int(r.features[k].shape[-1])
    if "text" in s.modalities and "text" not in dims:
        dims["text"] = dims["text_sentence"] = text_dim_of(s)
    if "audio" in s.modalities:
        dims.setdefault("audio", LLD_DIM)
        dims.setdefault("audio_functionals", FUNCTIONALS_DIM)
    if "vision" in s.modalities:
        dims.setdefault("vision", len(MEDIAPIPE_FEATURES if s.vision_backend == "mediapipe" else OPENCV_FEATURES))
    for k in ("text", "text_sentence", "audio", "audio_functionals", "vision"):
        dims.setdefault(k, 1)
    return dims


def split_block(
    results: Sequence[ClipResult],
    settings: ExtractorSettings,
    dims: Mapping[str, int],
    labels: Sequence[float] | None = None,
    transcripts: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """The MMSA arrays of one split from successful clip results."""
    s = settings.resolved()
    n = len(results)
    lt = s.text_max_len if "text" in s.modalities else 1
    la = s.audio_max_len if "audio" in s.modalities else 1
    lv = s.vision_max_len if "vision" in s.modalities else 1
    text = np.zeros((n, lt, dims["text"]), np.float32)
    text_bert = np.zeros((n, 3, lt), np.int64)
    text_sentence = np.zeros((n, dims["text_sentence"]), np.float32)
    audio = np.zeros((n, la, dims["audio"]), np.float32)
    audio_functionals = np.zeros((n, dims["audio_functionals"]), np.float32)
    vision = np.zeros((n, lv, dims["vision"]), np.float32)
    vision_mask = np.zeros((n, lv), bool)
    lengths = {m: np.zeros(n, np.int64) for m in ("text", "audio", "vision")}
    for i, r in enumerate(results):
        f = r.features
        if "text" in f:
            text[i] = _pad(f["text"], lt)
            text_bert[i] = _pad(f["text_tokens"].T, lt).T
            text_sentence[i] = f["text_sentence"]
            lengths["text"][i] = min(lt, f["text"].shape[0])
        if "audio" in f:
            audio[i] = _pad(f["audio"], la)
            audio_functionals[i] = f["audio_functionals"]
            lengths["audio"][i] = min(la, f["audio"].shape[0])
        if "vision" in f:
            vision[i] = _pad(f["vision"], lv)
            vision_mask[i] = _pad(f["vision_mask"], lv)
            lengths["vision"][i] = min(lv, f["vision"].shape[0])
    y = np.full(n, np.nan, np.float32) if labels is None else np.asarray(labels, dtype=np.float32).reshape(n)
    cls = np.where(np.isnan(y), -1, np.where(y < 0, 0, np.where(y > 0, 2, 1))).astype(np.int64)
    return {
        "id": [r.id for r in results],
        "raw_text": [(t or "") for t in (transcripts if transcripts is not None else [""] * n)],
        "text": text,
        "text_bert": text_bert,
        "text_sentence": text_sentence,
        "text_lengths": lengths["text"],
        "audio": audio,
        "audio_lengths": lengths["audio"],
        "audio_functionals": audio_functionals,
        "vision": vision,
        "vision_lengths": lengths["vision"],
        "vision_mask": vision_mask,
        "regression_labels": y,
        "classification_labels": cls,
        "annotations": [ANNOTATIONS[c] if c >= 0 else "" for c in cls.tolist()],
    }


def build_mmsa(
    results: Sequence[ClipResult],
    splits: Mapping[str, str],
    settings: ExtractorSettings,
    labels: Mapping[str, float],
    transcripts: Mapping[str, str | None],
    split_rule: Mapping[str, Any],
    feature_names: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole pickle object: three split blocks of the successful clips plus ``meta``."""
    s = settings.resolved()
    ok = [r for r in results if r.ok]
    dims = feature_dims(s, ok)
    obj: dict[str, Any] = {}
    for split in SPLITS:
        part = [r for r in ok if splits.get(r.id) == split]
        obj[split] = split_block(part, s, dims, [labels.get(r.id, math.nan) for r in part],
                                 [transcripts.get(r.id) for r in part])
    obj["meta"] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "extractor": s.to_dict(),
        "dims": dict(dims),
        "feature_names": dict(feature_names or {}),
        "split": dict(split_rule),
        "failed": {r.id: r.error for r in results if not r.ok},
        "notes": {r.id: list(r.notes) for r in ok if r.notes},
    }
    return obj


def write_pickle(path: str | Path, obj: Any) -> None:
    """Pickle ``obj`` to ``path`` atomically."""
    from mmib.train.rundir import atomic_write_bytes

    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write_bytes(path, buf.getvalue())


def feature_names(settings: ExtractorSettings) -> dict[str, Any]:
    """Names of the per-step / per-clip features (for ``meta["feature_names"]``)."""
    s = settings.resolved()
    names: dict[str, Any] = {}
    if "text" in s.modalities:
        names["text"] = f"token embeddings of {s.text_model}"
        names["text_sentence"] = f"sentence embedding of {s.text_model}"
    if "audio" in s.modalities:
        import opensmile

        names["audio"] = list(opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02,
                                              opensmile.FeatureLevel.LowLevelDescriptors).feature_names)
        names["audio_functionals"] = list(opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02,
                                                          opensmile.FeatureLevel.Functionals).feature_names)
    if "vision" in s.modalities:
        from mmib.features.vision import MEDIAPIPE_FEATURES, OPENCV_FEATURES

        names["vision"] = list(MEDIAPIPE_FEATURES if s.vision_backend == "mediapipe" else OPENCV_FEATURES)
    return names


def extract_to_mmsa(
    clips: Sequence[Any],
    output: str | Path,
    settings: ExtractorSettings,
    splits: Mapping[str, str],
    split_rule: Mapping[str, Any],
    jobs: int = 1,
    cache_dir: str | Path | None = None,
    require: Sequence[str] = (),
    progress: bool = True,
) -> tuple[dict[str, Any], list[ClipResult]]:
    """Extract ``clips`` and write the MMSA pickle to ``output``; returns the object and the results.

    Raises DataError when no clip could be extracted (nothing is written then).
    """
    from mmib.errors import DataError
    from mmib.features.extract import extract_clips, summary_lines

    s = settings.resolved()
    results = extract_clips(clips, s, jobs=jobs, cache_dir=cache_dir, require=require, progress=progress)
    if not any(r.ok for r in results):
        lines = summary_lines(results, limit=3)
        raise DataError(f"no clip could be extracted ({len(results)} failed; first: {lines[1].strip() if len(lines) > 1 else '?'})")
    labels = {c.id: c.label for c in clips}
    transcripts = {c.id: c.transcript for c in clips}
    obj = build_mmsa(results, splits, s, labels, transcripts, split_rule, feature_names(s))
    if not obj["train"]["id"]:
        raise DataError(f"no clip of the train split could be extracted; {output} was not written")
    write_pickle(output, obj)
    return obj, results


def arrays_for_run(
    results: Sequence[ClipResult], settings: ExtractorSettings, names: Sequence[str], text_key: str = "text",
    transcripts: Sequence[str | None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Features, lengths and extras of successful clips for :func:`mmib.api.predict_arrays`.

    ``names``: the run's modalities; ``text_key``: the file key its text modality
    was read from (``text`` or ``text_sentence``).
    """
    block = split_block(results, settings, feature_dims(settings, results), None, transcripts)
    keys = {"text": text_key, "audio": "audio", "vision": "vision"}
    features = {m: block[keys.get(m, m)] for m in names if keys.get(m, m) in block}
    lengths: dict[str, np.ndarray] = {}
    for m in names:
        x = features.get(m)
        if x is None or x.ndim != 3:
            continue
        if m == "text":
            lengths[m] = np.minimum(block["text_bert"][:, 1, :].sum(-1), x.shape[1])
        elif f"{m}_lengths" in block:
            lengths[m] = block[f"{m}_lengths"]
    return features, lengths, {"text_bert": block["text_bert"]}
