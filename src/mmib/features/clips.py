"""Which clips to extract: a labels CSV or a folder, media files per clip, and train/valid/test splits.

Labels CSV (one row per clip; column names are case-insensitive):

* ``id`` (or ``clip_id``, ``clip``, ``name``): the clip id. The media of clip
  ``X`` are ``CLIPS_DIR/X.<ext>`` (a video and/or an audio file, found by
  extension). The MMSA raw layout also works: with columns ``video_id`` and
  ``clip_id`` the id is ``VIDEO$_$CLIP`` and the media are ``CLIPS_DIR/VIDEO/CLIP.<ext>``.
* ``text`` (or ``transcript``): the transcript; when empty, ``CLIPS_DIR/X.txt`` is read.
* ``label`` (or ``score``, ``sentiment``), optional: a number (sentiment score).
* ``split`` (or ``mode``), optional: ``train``, ``valid`` (``val``, ``dev``) or ``test``.
* ``video``, ``audio``, optional: file paths (relative to ``CLIPS_DIR``) that
  override the search by id.

Without a split column clips are split at random with a seed (default
70/15/15 %); the assignment depends only on the ids, the seed and the fractions,
so a rerun (or a run after some clips failed) keeps every clip in its split.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmib.errors import ConfigError, DataError
from mmib.paths import safe_relative
from mmib.features.audio import AUDIO_EXTENSIONS
from mmib.features.vision import VIDEO_EXTENSIONS

SPLIT_NAMES = {"train": "train", "training": "train", "valid": "valid", "val": "valid", "validation": "valid",
               "dev": "valid", "test": "test", "testing": "test"}
ID_COLUMNS = ("id", "clip_id", "clip", "name")
TEXT_COLUMNS = ("text", "transcript", "transcription", "utterance")
LABEL_COLUMNS = ("label", "score", "sentiment")
SPLIT_COLUMNS = ("split", "mode")
TEXT_EXTENSION = ".txt"
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class Clip:
    """One clip to extract: its id, transcript, label, split and media files.

    ``error`` is set when the clip cannot be extracted at all (for the failure summary).
    """

    id: str
    transcript: str | None = None
    label: float = math.nan
    split: str | None = None
    video: Path | None = None
    audio: Path | None = None
    error: str | None = None


class _MediaIndex:
    """Files under a folder grouped by (relative folder, stem)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.groups: dict[tuple[str, str], list[Path]] = {}
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                rel = p.relative_to(root)
                self.groups.setdefault((rel.parent.as_posix(), p.stem), []).append(p)

    def find(self, folder: str, stem: str) -> tuple[Path | None, Path | None, Path | None]:
        """(video, audio, transcript file) of a stem in a folder, each None if absent."""
        files = self.groups.get((folder, stem), [])
        by_ext = {p.suffix.lower(): p for p in files}
        video = next((by_ext[e] for e in VIDEO_EXTENSIONS if e in by_ext), None)
        audio = next((by_ext[e] for e in AUDIO_EXTENSIONS if e in by_ext), None)
        return video, audio, by_ext.get(TEXT_EXTENSION)


def _read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable transcript ({exc})") from None


def _pick(columns: Sequence[str], names: Iterable[str]) -> str | None:
    return next((c for c in names if c in columns), None)


def read_labels(path: str | Path, clips_dir: str | Path) -> tuple[list[Clip], dict[str, bool]]:
    """Clips listed in a labels CSV with their media under ``clips_dir``.

    Returns the clips and which optional columns the file has
    (``{"label": ..., "split": ..., "text": ...}``). Errors in the file itself
    (no id column, duplicate ids, an unknown split) raise DataError; problems of
    single clips (no media and no transcript, a label that is not a number)
    set ``Clip.error`` so that the rest can still be extracted.
    """
    p = Path(path)
    root = _clips_root(clips_dir)
    if not p.is_file():
        raise DataError(f"{p}: no such labels file")
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{p}: not a readable CSV file ({exc})") from None
    if not header:
        raise DataError(f"{p}: empty file (expected a header with an id column)")
    mmsa = "video_id" in header and "clip_id" in header
    id_col = None if mmsa else _pick(header, ID_COLUMNS)
    if not mmsa and id_col is None:
        raise DataError(f"{p}: no id column (expected one of {', '.join(ID_COLUMNS)}, or video_id + clip_id); "
                        f"found: {', '.join(header)}")
    text_col, label_col, split_col = _pick(header, TEXT_COLUMNS), _pick(header, LABEL_COLUMNS), _pick(header, SPLIT_COLUMNS)
    if not rows:
        raise DataError(f"{p}: no rows")
    index = _MediaIndex(root)
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if mmsa:
            vid, cid = row.get("video_id", ""), row.get("clip_id", "")
            if not vid or not cid:
                raise DataError(f"{p}: line {line}: empty video_id or clip_id")
            for col, value in (("video_id", vid), ("clip_id", cid)):
                if "/" in value or "\\" in value or value in (".", ".."):
                    raise DataError(f"{p}: line {line}: {col} {value!r} is not a plain name (no '/', '\\' or '..')")
                safe_relative(value, f"{p}: line {line}: {col}")
            clip_id, places = f"{vid}$_${cid}", [(vid, cid), (".", f"{vid}$_${cid}")]
        else:
            clip_id = row.get(id_col or "", "")
            if not clip_id:
                raise DataError(f"{p}: line {line}: empty {id_col!r}")
            rel = safe_relative(clip_id, f"{p}: line {line}: clip id")
            places = [(rel.parent.as_posix(), rel.name)]
        if clip_id in seen:
            raise DataError(f"{p}: line {line}: clip id {clip_id!r} repeats line {seen[clip_id]}")
        seen[clip_id] = line
        clip = Clip(clip_id)
        text_file = None
        for folder, stem in places:
            video, audio, txt = index.find(folder, stem)
            if video or audio or txt:
                clip.video, clip.audio, text_file = video, audio, txt
                break
        for key in ("video", "audio"):
            if row.get(key):
                f = (root / safe_relative(row[key], f"{p}: line {line}: {key} file")).resolve()
                if not f.is_file():
                    clip.error = f"{key} file {row[key]} not found under {root}"
                setattr(clip, key, f)
        transcript = row.get(text_col, "") if text_col else ""
        if not transcript and text_file is not None:
            transcript = _read_text_file(text_file)
        clip.transcript = transcript or None
        if label_col:
            raw = row.get(label_col, "")
            try:
                clip.label = float(raw)
                if not math.isfinite(clip.label):
                    raise ValueError
            except ValueError:
                clip.error = clip.error or (f"label {raw!r} is not a number" if raw else "missing label")
        if split_col:
            value = row.get(split_col, "").lower()
            if value not in SPLIT_NAMES:
                raise DataError(f"{p}: line {line}: split {row.get(split_col, '')!r} is not train, valid or test")
            clip.split = SPLIT_NAMES[value]
        if clip.error is None and clip.video is None and clip.audio is None and clip.transcript is None:
            clip.error = (f"no media file and no transcript (looked for {places[0][1]}.<video/audio ext> "
                          f"in {root / places[0][0]})")
        clips.append(clip)
    return clips, {"label": label_col is not None, "split": split_col is not None, "text": text_col is not None}


def _clips_root(clips_dir: str | Path) -> Path:
    root = Path(clips_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{clips_dir}: not a directory of clips")
    return root


def discover_clips(path: str | Path, transcript: str | None = None) -> list[Clip]:
    """Clips found without a labels CSV: one media file, or every clip in a folder.

    A clip is a group of files with one stem: a video and/or an audio file and an
    optional ``.txt`` transcript. ``transcript`` (only for a single file) overrides
    the ``.txt``. A folder is searched recursively; ids are relative paths without
    extension.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{path}: no such file or directory")
    if p.is_file():
        ext = p.suffix.lower()
        if ext not in VIDEO_EXTENSIONS + AUDIO_EXTENSIONS + (TEXT_EXTENSION,):
            raise DataError(f"{path}: not a clip (expected a video {', '.join(VIDEO_EXTENSIONS[:4])}, ..., "
                            f"an audio file {', '.join(AUDIO_EXTENSIONS[:4])}, ... or a .txt transcript)")
        video, audio, txt = _MediaIndex(p.parent).find(".", p.stem)
        if ext in VIDEO_EXTENSIONS:
            video = p
        elif ext in AUDIO_EXTENSIONS:
            audio = p
        clip = Clip(p.stem, video=video, audio=audio)
        clip.transcript = transcript if transcript is not None else (_read_text_file(txt) if txt else None)
        clip.transcript = clip.transcript or None
        if clip.video is None and clip.audio is None and clip.transcript is None:
            clip.error = "empty transcript and no media file"
        return [clip]
    if transcript is not None:
        raise ConfigError("--transcript goes with a single clip file, not a folder (put X.txt beside each clip X)")
    index = _MediaIndex(p)
    clips = []
    for folder, stem in sorted(index.groups):
        video, audio, txt = index.find(folder, stem)
        if video is None and audio is None and txt is None:
            continue
        cid = stem if folder == "." else f"{folder}/{stem}"
        text = _read_text_file(txt) if txt else None
        clip = Clip(cid, transcript=text or None, video=video, audio=audio)
        if clip.video is None and clip.audio is None and clip.transcript is None:
            clip.error = f"{txt.name if txt else cid}: empty transcript and no media file"
        clips.append(clip)
    if not clips:
        raise DataError(f"{path}: no clips found (video {', '.join(VIDEO_EXTENSIONS[:3])}, ..., audio "
                        f"{', '.join(AUDIO_EXTENSIONS[:3])}, ... or .txt transcripts)")
    return clips


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` -> train/valid/test fractions (they must sum to 1)."""
    try:
        parts = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"--split {text!r}: expected three numbers TRAIN,VALID,TEST such as 0.7,0.15,0.15") from None
    if len(parts) != 3 or any(not math.isfinite(v) or v < 0 for v in parts) or abs(sum(parts) - 1) > 1e-6 or parts[0] <= 0:
        raise ConfigError(f"--split {text!r}: expected three fractions >= 0 (train > 0) that sum to 1")
    return parts  # type: ignore[return-value]


def assign_splits(clips: Sequence[Clip], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, str]:
    """Split of every clip: its CSV split if the file has them, else a seeded random split.

    The random split permutes the sorted ids with ``seed`` and cuts the
    permutation by ``fractions``; a split with a fraction > 0 gets at least one
    clip when there are at least three clips.
    """
    if any(c.split for c in clips):
        return {c.id: c.split or "train" for c in clips}
    ids = sorted(c.id for c in clips)
    n = len(ids)
    counts = [int(round(n * f)) for f in fractions[1:]]
    if n >= 3:
        counts = [max(c, 1) if f > 0 else 0 for c, f in zip(counts, fractions[1:])]
    while n - sum(counts) < 1 and sum(counts) > 0:
        i = int(np.argmax(counts))
        counts[i] -= 1
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, str] = {}
    n_valid, n_test = counts
    for rank, i in enumerate(perm.tolist()):
        out[ids[i]] = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
    return out
