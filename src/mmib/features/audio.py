"""Audio features: openSMILE eGeMAPS (v02) low-level descriptors as a sequence plus functionals.

Decoding: audio files go through ``soundfile`` (WAV, FLAC, OGG, MP3) and are
resampled with librosa (soxr) to ``audio_sample_rate`` mono. Audio inside a video
container (MP4, MKV, ...) and other formats are decoded with PyAV, whose PyPI
wheels bundle FFmpeg's libraries; an ``ffmpeg`` executable on PATH is the
fallback. (librosa's own fallback, audioread, finds no backend for MP4 on a
machine without ffmpeg/GStreamer, so it is not relied on.)

Per clip the extractor gives:

* ``seq``: ``(T, 25)`` eGeMAPS LLDs (loudness, alpha ratio, Hammarberg index,
  spectral slopes and flux, MFCC 1-4, F0, jitter, shimmer, HNR, H1-H2, H1-A3,
  F1-F3 frequency/bandwidth/amplitude), 10 ms frames averaged into ``audio_fps``
  steps per second (at most ``audio_max_len`` steps, evenly covering the clip);
* ``functionals``: ``(88,)`` the eGeMAPS functionals of the whole clip.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmib.errors import ConfigError
from mmib.features.settings import FEATURES_HINT, ClipError, ModalityMissing

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".wma")
_SOUNDFILE_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
#: Shorter signals give openSMILE too few frames (its functionals become NaN).
MIN_SECONDS = 0.25
#: A stream that decodes to less than this share of its declared duration is truncated.
TRUNCATED_SHARE = 0.9

LLD_DIM = 25
FUNCTIONALS_DIM = 88


@dataclass
class AudioFeatures:
    seq: np.ndarray
    functionals: np.ndarray
    seconds: float


def _check_length(n_samples: int, sr: int, declared: float | None, path: Path) -> None:
    got = n_samples / sr
    if declared and declared > 0 and got < TRUNCATED_SHARE * declared - 0.05:
        raise ClipError(f"{path.name}: truncated audio: decoded {got:.2f} s of {declared:.2f} s declared")


def _decode_soundfile(path: Path, sr: int) -> np.ndarray:
    import librosa
    import soundfile as sf

    try:
        info = sf.info(str(path))
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, EOFError, ValueError) as exc:
        raise _Unsupported(str(exc)) from None
    declared = _wav_declared_seconds(path, info) if path.suffix.lower() == ".wav" else None
    _check_length(data.shape[0], file_sr, declared, path)
    y = data.mean(axis=1)
    if file_sr != sr:
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr)
    return np.ascontiguousarray(y, dtype=np.float32)


def _wav_declared_seconds(path: Path, info) -> float | None:  # type: ignore[no-untyped-def]
    """Duration a WAV header declares (its data chunk size), None if unknown or streamed.

    libsndfile quietly reads what is there, so a truncated WAV is only seen by
    comparing the header's data size with the samples actually decoded.
    """
    try:
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    break
                f.seek(size + (size & 1), 1)
    except OSError:
        return None
    if size in (0, 0xFFFFFFFF):
        return None
    width = _BYTES_PER_SAMPLE.get(info.subtype)
    if not width:
        return None
    return size / (width * info.channels) / info.samplerate


_BYTES_PER_SAMPLE = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


class _Unsupported(Exception):
    """soundfile cannot read this format: try the next decoder."""


def _reason(exc: Exception) -> str:
    """A short reason from a decoder error (FFmpeg's message without errno and path)."""
    return str(getattr(exc, "strerror", None) or exc).strip()


def _decode_av(path: Path, sr: int) -> np.ndarray:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise ClipError(f"{path.name}: cannot open it ({_reason(exc)}): undecodable or truncated") from None
    with container:
        if not container.streams.audio:
            raise ModalityMissing(f"{path.name} has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                for f in resampler.resample(frame):
                    chunks.append(f.to_ndarray().reshape(-1))
            for f in resampler.resample(None):
                chunks.append(f.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            done = sum(c.size for c in chunks) / sr
            raise ClipError(f"{path.name}: audio undecodable after {done:.2f} s ({_reason(exc)}): corrupt or truncated") from None
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration:
            declared = container.duration / av.time_base
    y = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    _check_length(y.size, sr, declared, path)
    if declared and y.size > round(declared * sr):
        y = y[: round(declared * sr)]  # encoder padding (AAC decodes whole 1024-sample frames)
    return y


def _decode_ffmpeg(path: Path, sr: int) -> np.ndarray:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise ConfigError(
            f"{path.name}: decoding audio from this format needs PyAV ({FEATURES_HINT}, package av) or an ffmpeg executable on PATH"
        )
    proc = subprocess.run(
        [exe, "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "-"],
        capture_output=True, check=False,
    )
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        if any("does not contain any stream" in e or "matches no streams" in e for e in err):
            raise ModalityMissing(f"{path.name} has no audio stream")
        raise ClipError(f"{path.name}: ffmpeg cannot decode it ({err[-1] if err else 'exit ' + str(proc.returncode)})")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def decode_audio(path: str | Path, sr: int = 16000) -> np.ndarray:
    """Mono float32 samples of ``path`` (an audio file or a video with an audio stream) at ``sr`` Hz.

    Raises :class:`ClipError` for undecodable or truncated files and
    :class:`ModalityMissing` for a container without an audio stream.
    """
    p = Path(path)
    soundfile_error = None
    if p.suffix.lower() in _SOUNDFILE_EXTENSIONS:
        try:
            return _decode_soundfile(p, sr)
        except _Unsupported as exc:
            soundfile_error = str(exc)
    if importlib.util.find_spec("av") is None:
        return _decode_ffmpeg(p, sr)
    try:
        return _decode_av(p, sr)
    except ClipError:
        if soundfile_error:
            raise ClipError(f"{p.name}: undecodable audio ({soundfile_error})") from None
        raise


def _pool(frames: np.ndarray, n_steps: int) -> np.ndarray:
    """Average ``(F, D)`` frames into ``n_steps`` contiguous, near-equal bins."""
    edges = np.linspace(0, frames.shape[0], n_steps + 1).round().astype(np.int64)
    sums = np.add.reduceat(frames, edges[:-1], axis=0)
    counts = np.diff(edges).astype(np.float32)[:, None]
    return (sums / np.maximum(counts, 1.0)).astype(np.float32)


def steps_for(seconds: float, fps: float, max_len: int, available: int | None = None) -> int:
    """Steps of a sequence covering ``seconds`` at ``fps`` (at least 1, at most ``max_len``)."""
    n = max(1, math.ceil(seconds * fps - 1e-9))
    n = min(n, max_len)
    return min(n, available) if available else n


class AudioExtractor:
    """eGeMAPS LLD sequence and functionals of a mono signal (openSMILE, CPU)."""

    dim = LLD_DIM
    functionals_dim = FUNCTIONALS_DIM

    def __init__(self, sample_rate: int = 16000, fps: float = 10.0, max_len: int = 300) -> None:
        try:
            import librosa  # noqa: F401
            import opensmile
            import soundfile  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"audio features need {exc.name} ({FEATURES_HINT})") from None
        self.sample_rate, self.fps, self.max_len = int(sample_rate), float(fps), int(max_len)
        self._lld = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.LowLevelDescriptors)
        self._func = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
        self.lld_names = list(self._lld.feature_names)
        self.functional_names = list(self._func.feature_names)

    def from_file(self, path: str | Path) -> AudioFeatures:
        return self(decode_audio(path, self.sample_rate))

    def __call__(self, signal: np.ndarray) -> AudioFeatures:
        """Features of a mono signal at ``sample_rate``; too short a signal raises ModalityMissing."""
        y = np.asarray(signal, dtype=np.float32).reshape(-1)
        seconds = y.size / self.sample_rate
        if seconds < MIN_SECONDS:
            raise ModalityMissing(f"audio is {seconds:.2f} s long (< {MIN_SECONDS} s)")
        if not np.isfinite(y).all():
            raise ClipError("audio holds NaN/inf samples")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            lld = self._lld.process_signal(y, self.sample_rate).to_numpy(dtype=np.float32)
            func = self._func.process_signal(y, self.sample_rate).to_numpy(dtype=np.float32).reshape(-1)
        lld = np.nan_to_num(lld, nan=0.0, posinf=0.0, neginf=0.0)
        func = np.nan_to_num(func, nan=0.0, posinf=0.0, neginf=0.0)
        n = steps_for(seconds, self.fps, self.max_len, lld.shape[0])
        return AudioFeatures(seq=_pool(lld, n), functionals=func, seconds=seconds)
