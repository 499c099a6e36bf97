"""Synthetic clips for tests, benchmarks and trying ``mmib extract`` without data.

* :func:`speech`: a spoken sentence from ``espeak-ng`` (Debian package) when it is
  installed, else a voiced, syllable-modulated harmonic tone;
* :func:`face_frames` / :func:`blank_frames`: video frames with a drawn face
  (skin-coloured oval, eyes, brows, nose, a mouth that opens and closes, a
  slowly moving head) or without one;
* :func:`write_video` (OpenCV, video only) and :func:`write_av_clip` (PyAV, video
  with an AAC audio track), :func:`write_wav`;
* :func:`make_clip_folder`: a folder of clips and a labels CSV.
"""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def tone(seconds: float, sr: int = 16000, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A speech-like signal: harmonics of a wandering F0, amplitude-modulated into ~4 syllables per second."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    y = 0.3 * y * envelope + 0.003 * rng.standard_normal(t.size)
    return y.astype(np.float32)


def speech(text: str, seconds: float | None = None, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """``text`` spoken by espeak-ng at ``sr`` Hz (looped/cut to ``seconds`` if given), or :func:`tone` without espeak-ng."""
    if not espeak_available():
        return tone(seconds or 2.0, sr, seed=seed)
    import librosa
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        y, file_sr = sf.read(str(wav), dtype="float32")
    y = librosa.resample(y.reshape(-1), orig_sr=file_sr, target_sr=sr) if file_sr != sr else y.reshape(-1)
    if seconds is not None:
        n = int(seconds * sr)
        y = np.resize(y, n) if y.size < n else y[:n]
    return np.ascontiguousarray(y, dtype=np.float32)


def _face(frame: np.ndarray, t: float, cx: int, cy: int, scale: float, mouth: float) -> None:
    import cv2

    s = scale
    cv2.ellipse(frame, (cx, cy), (int(60 * s), int(80 * s)), 0, 0, 360, (150, 180, 220), -1)
    for dx in (-25, 25):
        ex, ey = cx + int(dx * s), cy - int(20 * s)
        cv2.ellipse(frame, (ex, ey), (int(13 * s), int(7 * s)), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(frame, (ex, ey), max(1, int(5 * s)), (40, 30, 20), -1)
        cv2.line(frame, (ex - int(14 * s), ey - int(18 * s)), (ex + int(14 * s), ey - int(18 * s)), (40, 40, 60),
                 max(1, int(4 * s)))
    cv2.line(frame, (cx, cy - int(10 * s)), (cx - int(5 * s), cy + int(15 * s)), (110, 130, 170), max(1, int(3 * s)))
    cv2.ellipse(frame, (cx, cy + int(40 * s)), (int(25 * s), max(1, int((4 + 10 * mouth) * s))), 0, 0, 180,
                (60, 60, 160), -1)


def face_frames(seconds: float, fps: float = 15.0, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[np.ndarray]:
    """BGR frames of a drawn face that moves slightly and opens its mouth (``size`` = width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    frames = []
    for i in range(max(1, int(round(seconds * fps)))):
        t = i / fps
        frame = np.full((h, w, 3), 90, np.uint8)
        frame += rng.integers(0, 6, frame.shape, dtype=np.uint8)
        cx = int(w / 2 + 0.05 * w * math.sin(2 * math.pi * 0.3 * t))
        cy = int(h / 2 + 0.03 * h * math.cos(2 * math.pi * 0.2 * t))
        _face(frame, t, cx, cy, min(w, h) / 240, 0.5 + 0.5 * math.sin(2 * math.pi * 2.0 * t))
        frames.append(frame)
    return frames


def blank_frames(seconds: float, fps: float = 15.0, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[np.ndarray]:
    """BGR frames with no face: a grey background with slow gradients and noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(60, 140, w, dtype=np.float32)[None, :, None]
    out = []
    for i in range(max(1, int(round(seconds * fps)))):
        frame = np.clip(ramp + 10 * math.sin(i / 7) + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append(frame)
    return out


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 15.0) -> Path:
    """Write BGR frames to a video-only MP4 (OpenCV, codec mp4v)."""
    import cv2

    p = Path(path)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {p} (no mp4v encoder in this OpenCV build)")
    for f in frames:
        writer.write(f)
    writer.release()
    return p


def write_av_clip(path: str | Path, frames: Sequence[np.ndarray], audio: np.ndarray, fps: float = 15.0,
                  sr: int = 16000) -> Path:
    """Write BGR frames and a mono float signal to an MP4 with an MPEG-4 video and an AAC audio track (PyAV)."""
    import av

    p = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(p), "w") as out:
        vs = out.add_stream("mpeg4", rate=int(round(fps)))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aud = out.add_stream("aac", rate=sr)
        aud.layout = "mono"
        for f in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="bgr24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        chunk = 1024
        y = np.asarray(audio, dtype=np.float32).reshape(-1)
        for start in range(0, y.size, chunk):
            frame = av.AudioFrame.from_ndarray(y[None, start : start + chunk].copy(), format="fltp", layout="mono")
            frame.sample_rate = sr
            frame.pts = start
            for packet in aud.encode(frame):
                out.mux(packet)
        for packet in aud.encode(None):
            out.mux(packet)
    return p


def write_wav(path: str | Path, audio: np.ndarray, sr: int = 16000) -> Path:
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, dtype=np.float32), sr)
    return Path(path)


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to its first ``keep`` share of bytes (a truncated download)."""
    p = Path(path)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    return p


POSITIVE = ("I really loved this movie, it was wonderful", "what a great and happy ending", "the acting was superb")
NEGATIVE = ("this film was terrible and boring", "I hated every minute of it", "the plot was awful and sad")


def make_clip_folder(root: str | Path, n: int = 12, seconds: float = 2.0, fps: float = 10.0, seed: int = 0,
                     size: tuple[int, int] = (240, 180), with_split: bool = False) -> Path:
    """A folder of ``n`` labelled clips (MP4 with face + speech in the video) and ``labels.csv``.

    Clips alternate positive (label +2, smiling text) and negative (-2); returns
    the CSV path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        text = (POSITIVE if positive else NEGATIVE)[i // 2 % 3]
        frames = face_frames(seconds, fps, size, seed=seed + i)
        write_av_clip(root / f"clip{i:03d}.mp4", frames, speech(text, seconds, seed=seed + i), fps)
        split = "train" if i < n * 0.6 else "valid" if i < n * 0.8 else "test"
        rows.append({"id": f"clip{i:03d}", "text": text, "label": 2.0 if positive else -2.0,
                     **({"split": split} if with_split else {})})
    csv_path = root / "labels.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
