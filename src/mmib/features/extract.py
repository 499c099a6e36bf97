"""The clip loop: extract every clip (in parallel workers), cache each finished clip, summarise failures.

:func:`extract_clips` runs the extractors of :class:`ExtractorSettings` over a
list of :class:`~mmib.features.clips.Clip` and returns one :class:`ClipResult`
per clip, in order. A clip fails (and is left out of the written file) when its
media cannot be decoded or are truncated, when a required modality is missing,
or when nothing at all can be extracted; a clip whose transcript, audio or face
is merely absent is kept with that modality masked, and the reason is noted.

Each finished clip is written to a cache folder (one ``.npz`` per clip, named by
a hash of the extractor settings, the clip's transcript and its media files'
names, sizes and modification times), so a rerun skips finished clips and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmib.errors import MMIBError
from mmib.features.clips import Clip
from mmib.features.settings import ClipError, ExtractorSettings, ModalityMissing

#: Keys of a clip's feature arrays (each optional: absent = modality missing).
FEATURE_KEYS = ("text", "text_tokens", "text_sentence", "audio", "audio_functionals", "vision", "vision_mask")
CACHE_VERSION = 1


@dataclass
class ClipResult:
    """Features of one clip (``error`` set when it failed) and notes on masked modalities."""

    id: str
    features: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    cached: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def present(self, modality: str) -> bool:
        return modality in self.features


class Extractors:
    """The extractors that ``settings`` asks for, loaded once and applied clip by clip."""

    def __init__(self, settings: ExtractorSettings) -> None:
        self.settings = s = settings.resolved()
        self.text = self.audio = self.vision = None
        if "text" in s.modalities:
            from mmib.features.text import TextExtractor

            self.text = TextExtractor(s.text_model, s.text_max_len)
        if "audio" in s.modalities:
            from mmib.features.audio import AudioExtractor

            self.audio = AudioExtractor(s.audio_sample_rate, s.audio_fps, s.audio_max_len)
        if "vision" in s.modalities:
            from mmib.features.vision import VisionExtractor

            self.vision = VisionExtractor(s.vision_backend, s.vision_fps, s.vision_max_len, s.vision_max_side)

    def extract(self, clip: Clip, require: Sequence[str] = ()) -> ClipResult:
        """Features of one clip; never raises for a bad clip (the result carries the reason)."""
        start = time.perf_counter()
        res = ClipResult(clip.id)
        if clip.error:
            res.error = clip.error
            return res
        try:
            self._text(clip, res)
            self._audio(clip, res)
            self._vision(clip, res)
        except ClipError as exc:
            res.features.clear()
            res.error = str(exc)
        except MMIBError:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken clip must not stop the others
            res.features.clear()
            res.error = f"{type(exc).__name__}: {exc}"
        if res.ok:
            missing = [m for m in self.settings.modalities if not res.present(m)]
            required = [m for m in require if m in missing]
            if required:
                res.features.clear()
                res.error = f"required modality {', '.join(required)} missing ({'; '.join(res.notes)})"
            elif len(missing) == len(self.settings.modalities):
                res.features.clear()
                res.error = "nothing to extract: " + "; ".join(res.notes)
        res.seconds = time.perf_counter() - start
        return res

    def _text(self, clip: Clip, res: ClipResult) -> None:
        if self.text is None:
            return
        tf = self.text(clip.transcript)
        if tf is None:
            res.notes.append("text: missing transcript (masked)")
            return
        res.features.update(text=tf.seq, text_tokens=tf.tokens, text_sentence=tf.sentence)

    def _audio(self, clip: Clip, res: ClipResult) -> None:
        if self.audio is None:
            return
        source = clip.audio or clip.video
        if source is None:
            res.notes.append("audio: no audio or video file (masked)")
            return
        try:
            af = self.audio.from_file(source)
        except ModalityMissing as exc:
            res.notes.append(f"audio: {exc} (masked)")
            return
        res.features.update(audio=af.seq, audio_functionals=af.functionals)

    def _vision(self, clip: Clip, res: ClipResult) -> None:
        if self.vision is None:
            return
        if clip.video is None:
            res.notes.append("vision: no video file (masked)")
            return
        try:
            vf = self.vision(clip.video)
        except ModalityMissing as exc:
            res.notes.append(f"vision: {exc} (masked)")
            return
        res.features.update(vision=vf.seq, vision_mask=vf.face)
        n_off = int((~vf.face).sum())
        if n_off:
            res.notes.append(f"vision: no face in {n_off} of {vf.face.size} frames (those frames masked)")

    @property
    def dims(self) -> dict[str, int]:
        """Feature widths: text, text_sentence, audio, audio_functionals, vision."""
        d = {}
        if self.text is not None:
            d["text"] = d["text_sentence"] = self.text.dim
        if self.audio is not None:
            d["audio"], d["audio_functionals"] = self.audio.dim, self.audio.functionals_dim
        if self.vision is not None:
            d["vision"] = self.vision.dim
        return d

    def close(self) -> None:
        if self.vision is not None:
            self.vision.close()


# ---------------------------------------------------------------------- cache
def _file_stamp(p: Path | None) -> list[Any] | None:
    if p is None:
        return None
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(settings: ExtractorSettings, clip: Clip) -> str:
    """A hash of everything that decides a clip's features."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "settings": settings.resolved().to_dict(), "id": clip.id, "text": clip.transcript,
         "video": _file_stamp(clip.video), "audio": _file_stamp(clip.audio)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.npz"


def save_cached(cache_dir: Path, key: str, res: ClipResult) -> None:
    """Write a finished clip atomically (failed clips are not cached: they are retried)."""
    if not res.ok:
        return
    path = _cache_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, __notes__=np.array(json.dumps(res.notes)), __id__=np.array(res.id), **res.features)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cached(cache_dir: Path, key: str, clip_id: str) -> ClipResult | None:
    """The cached result of a clip, or None (absent or unreadable: then it is extracted again)."""
    path = _cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["__id__"]) != clip_id:
                return None
            feats = {k: z[k] for k in z.files if k in FEATURE_KEYS}
            notes = list(json.loads(str(z["__notes__"])))
    except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError):
        return None
    return ClipResult(clip_id, feats, notes, cached=True)


# ---------------------------------------------------------------------- workers
# Each worker process keeps its extractors here (loaded on its first clip); the
# parent process only uses this dict when it extracts in-process (jobs=1).
_WORKER_STATE: dict[str, Any] = {}


def _init_worker(threads: int) -> None:
    """Limit a worker's threads so that J workers share the cores instead of oversubscribing them."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _WORKER_STATE["threads"] = threads


def _worker_extractors(settings: ExtractorSettings) -> Extractors:
    key = json.dumps(settings.to_dict(), sort_keys=True)
    if _WORKER_STATE.get("key") != key:
        threads = _WORKER_STATE.get("threads")
        if threads:
            import torch

            torch.set_num_threads(threads)
            try:
                import cv2

                cv2.setNumThreads(threads)
            except ImportError:
                pass
        old = _WORKER_STATE.pop("extractors", None)
        if old is not None:
            old.close()
        _WORKER_STATE["extractors"] = Extractors(settings)
        _WORKER_STATE["key"] = key
    return _WORKER_STATE["extractors"]


def _work(clip: Clip, settings: ExtractorSettings, require: tuple[str, ...], cache_dir: str | None) -> ClipResult:
    res = _worker_extractors(settings).extract(clip, require)
    if cache_dir is not None and res.ok:
        save_cached(Path(cache_dir), cache_key(settings, clip), res)
    return res


def extract_clips(
    clips: Sequence[Clip],
    settings: ExtractorSettings,
    jobs: int = 1,
    cache_dir: str | Path | None = None,
    require: Sequence[str] = (),
    progress: bool = True,
    extractors: Extractors | None = None,
    on_result: Callable[[ClipResult], None] | None = None,
) -> list[ClipResult]:
    """Extract ``clips`` with ``jobs`` worker processes; results in clip order.

    ``cache_dir``: reuse and store per-clip results there (None: no cache).
    ``require``: modalities whose absence fails a clip. ``extractors``: already
    loaded extractors to use in-process (jobs=1). Setup problems (a missing
    package or model) raise :class:`~mmib.errors.ConfigError` before or at the
    first clip; problems of single clips are reported in the results.
    """
    from tqdm.auto import tqdm

    settings = settings.resolved()
    jobs = max(1, int(jobs))
    cache = Path(cache_dir) if cache_dir is not None else None
    results: dict[str, ClipResult] = {}
    todo: list[Clip] = []
    for clip in clips:
        if clip.error:
            results[clip.id] = ClipResult(clip.id, error=clip.error)
            continue
        hit = load_cached(cache, cache_key(settings, clip), clip.id) if cache is not None else None
        if hit is not None:
            results[clip.id] = hit
        else:
            todo.append(clip)
    bar = tqdm(total=len(clips), initial=len(clips) - len(todo), unit="clip", desc="extract", disable=not progress,
               dynamic_ncols=True)

    def done(res: ClipResult) -> None:
        results[res.id] = res
        bar.update(1)
        if on_result is not None:
            on_result(res)

    try:
        if todo and (jobs == 1 or len(todo) == 1):
            ex = extractors if extractors is not None else Extractors(settings)
            try:
                for clip in todo:
                    res = ex.extract(clip, tuple(require))
                    if cache is not None:
                        save_cached(cache, cache_key(settings, clip), res)
                    done(res)
            finally:
                if extractors is None:
                    ex.close()
        elif todo:
            threads = max(1, (os.cpu_count() or 1) // min(jobs, len(todo)))
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker,
                                        initargs=(threads,)) as pool:
                futures = [pool.submit(_work, clip, settings, tuple(require), str(cache) if cache else None)
                           for clip in todo]
                try:
                    for fut in cf.as_completed(futures):
                        done(fut.result())
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return [results[c.id] for c in clips]


def summary_lines(results: Sequence[ClipResult], limit: int = 50) -> list[str]:
    """Human-readable lines: failed clips with reasons, then clips written with masked modalities."""
    failed = [r for r in results if not r.ok]
    noted = [r for r in results if r.ok and r.notes]
    lines: list[str] = []
    if failed:
        lines.append(f"{len(failed)} of {len(results)} clips failed (not written):")
        lines += [f"  {r.id}: {r.error}" for r in failed[:limit]]
        if len(failed) > limit:
            lines.append(f"  ... and {len(failed) - limit} more")
    if noted:
        lines.append(f"{len(noted)} clips written with notes:")
        lines += [f"  {r.id}: {'; '.join(r.notes)}" for r in noted[:limit]]
        if len(noted) > limit:
            lines.append(f"  ... and {len(noted) - limit} more")
    return lines
