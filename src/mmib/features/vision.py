"""Vision features: face geometry per sampled video frame, with a mask of frames that show a face.

Frames are read with OpenCV at ``vision_fps`` (at most ``vision_max_len``
frames, evenly covering the clip) and scaled to at most ``vision_max_side``
pixels. Each frame gets one feature vector from a backend:

* ``mediapipe`` (extra ``mmib[mediapipe]``, ``mediapipe==0.10.14``, whose wheel
  bundles the face detection and face mesh models): 468 face-mesh landmarks turned
  into 16 geometry features (:data:`MEDIAPIPE_FEATURES`): face position and size,
  head pose (yaw, pitch, roll from the landmark frame), mouth opening and width,
  mouth-corner lift, eye aspect ratios, brow raise, inner-brow distance, jaw drop;
  distances are divided by the inter-ocular distance so they do not depend on
  the face's size in the frame.
* ``opencv`` (no extra dependency): OpenCV's bundled Haar cascades for face, eyes
  and smile (``cv2.data.haarcascades``) give 13 coarser features
  (:data:`OPENCV_FEATURES`).

The first feature, ``face``, is 1 where a face was found and 0 where not; the
other features of a frame without a face are 0, and the per-frame ``face`` mask
is also written separately (``vision_mask``), so such frames are masked rather
than dropped. A clip in which no frame shows a face has no vision modality
(length 0).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmib.errors import ConfigError
from mmib.features.audio import TRUNCATED_SHARE, steps_for
from mmib.features.settings import FEATURES_HINT, MEDIAPIPE_HINT, ClipError, ModalityMissing

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")

MEDIAPIPE_FEATURES: tuple[str, ...] = (
    "face", "face_x", "face_y", "face_size", "yaw", "pitch", "roll", "mouth_open", "mouth_width", "smile",
    "eye_open_r", "eye_open_l", "brow_raise_r", "brow_raise_l", "brow_inner", "jaw_drop",
)
OPENCV_FEATURES: tuple[str, ...] = (
    "face", "face_x", "face_y", "face_size", "eyes", "eye_distance", "eye_tilt", "eye_offset", "smile",
    "smile_width", "smile_y", "face_brightness", "face_contrast",
)


@dataclass
class VisionFeatures:
    seq: np.ndarray
    face: np.ndarray
    seconds: float


def _cv2():  # type: ignore[no-untyped-def]
    try:
        import cv2
    except ImportError:
        raise ConfigError(f"vision features need OpenCV ({FEATURES_HINT}, package opencv-python-headless)") from None
    return cv2


# ---------------------------------------------------------------------- backends
class MediaPipeFaces:
    """Face-mesh geometry (16 features) of one BGR frame, or None without a face."""

    names = MEDIAPIPE_FEATURES

    def __init__(self) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            import mediapipe as mp
        except ImportError:
            raise ConfigError(f"vision backend 'mediapipe' needs the package mediapipe: {MEDIAPIPE_HINT}; "
                              "or use --vision opencv") from None
        try:
            solutions = mp.solutions
        except AttributeError:
            raise ConfigError(f"mediapipe {getattr(mp, '__version__', '?')} has no bundled face mesh "
                              f"(mp.solutions); {MEDIAPIPE_HINT}") from None
        self._mesh = solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5
        )
        self._cv2 = _cv2()

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        h, w = frame.shape[:2]
        with warnings.catch_warnings():  # protobuf's deprecation notice inside mediapipe 0.10.14
            warnings.filterwarnings("ignore", message=".*GetPrototype", category=UserWarning)
            result = self._mesh.process(self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB))
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        p = np.array([(q.x * w, q.y * h, q.z * w) for q in lm], dtype=np.float64)
        return mesh_geometry(p, w, h)

    def close(self) -> None:
        self._mesh.close()


def mesh_geometry(p: np.ndarray, width: int, height: int) -> np.ndarray:
    """The 16 :data:`MEDIAPIPE_FEATURES` of face-mesh landmarks ``p`` (468, 3) in pixels."""

    def d(i: int, j: int) -> float:
        return float(np.linalg.norm(p[i] - p[j]))

    iod = max(d(33, 263), 1e-6)
    x = p[263] - p[33]
    x /= max(np.linalg.norm(x), 1e-9)
    y = p[152] - p[10]
    y -= y.dot(x) * x
    y /= max(np.linalg.norm(y), 1e-9)
    yaw = math.atan2(x[2], x[0])
    pitch = math.atan2(y[2], y[1])
    roll = math.atan2(x[1], x[0])
    centre = p[:, :2].mean(0)
    lips = (p[13] + p[14]) / 2
    corners = (p[61] + p[291]) / 2
    feats = [
        1.0,
        centre[0] / width,
        centre[1] / height,
        iod / math.hypot(width, height),
        yaw, pitch, roll,
        d(13, 14) / iod,
        d(61, 291) / iod,
        float((lips - corners).dot(y)) / iod,
        (d(160, 144) + d(158, 153)) / (2 * max(d(33, 133), 1e-6)),
        (d(385, 380) + d(387, 373)) / (2 * max(d(362, 263), 1e-6)),
        float((p[159] - p[105]).dot(y)) / iod,
        float((p[386] - p[334]).dot(y)) / iod,
        d(107, 336) / iod,
        float((p[152] - p[1]).dot(y)) / iod,
    ]
    return np.asarray(feats, dtype=np.float32)


class HaarFaces:
    """Haar-cascade face, eyes and smile features (13) of one BGR frame, or None without a face."""

    names = OPENCV_FEATURES
    DETECT_SIDE = 320

    def __init__(self) -> None:
        cv2 = self._cv2 = _cv2()
        if not hasattr(cv2, "CascadeClassifier"):  # OpenCV 5 moved the Haar cascades to opencv-contrib
            raise ConfigError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 moved them to contrib): "
                              "install 'opencv-python-headless<5' or use --vision mediapipe")
        root = Path(cv2.data.haarcascades)
        self._cascades = {}
        for key, name in (("face", "haarcascade_frontalface_default.xml"), ("eye", "haarcascade_eye.xml"),
                          ("smile", "haarcascade_smile.xml")):
            c = cv2.CascadeClassifier(str(root / name))
            if c.empty():
                raise ConfigError(f"OpenCV cascade {root / name} is missing or unreadable (reinstall opencv-python-headless)")
            self._cascades[key] = c

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        cv2 = self._cv2
        h, w = frame.shape[:2]
        gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        # the face is searched on a copy of at most DETECT_SIDE px (4x fewer pixels than 640x480),
        # eyes and smile on the full-resolution face
        scale = min(1.0, self.DETECT_SIDE / max(h, w))
        small = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        side = min(small.shape[:2])
        faces = self._cascades["face"].detectMultiScale(small, 1.15, 5, minSize=(max(24, side // 8),) * 2)
        if len(faces) == 0:
            return None
        fx, fy, fw, fh = (int(round(v / scale)) for v in max(faces, key=lambda b: b[2] * b[3]))
        fw, fh = min(fw, w - fx), min(fh, h - fy)
        face = gray[fy : fy + fh, fx : fx + fw]
        top = face[: int(fh * 0.6)]
        eyes = self._cascades["eye"].detectMultiScale(top, 1.1, 6, minSize=(max(8, fw // 8),) * 2)
        eyes = sorted(sorted(eyes, key=lambda b: -b[2] * b[3])[:2], key=lambda b: b[0])
        centres = [(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in eyes]
        eye_distance = eye_tilt = eye_offset = 0.0
        if len(centres) == 2:
            (x1, y1), (x2, y2) = centres
            eye_distance = math.hypot(x2 - x1, y2 - y1) / fw
            eye_tilt = math.atan2(y2 - y1, x2 - x1)
        if centres:
            eye_offset = (float(np.mean([c[0] for c in centres])) - fw / 2) / fw
        low0 = int(fh * 0.55)
        smiles = self._cascades["smile"].detectMultiScale(face[low0:], 1.7, 20, minSize=(max(10, fw // 5), max(6, fh // 10)))
        smile = smile_width = smile_y = 0.0
        if len(smiles):
            sx, sy, sw, sh = max(smiles, key=lambda b: b[2] * b[3])
            smile, smile_width, smile_y = 1.0, sw / fw, (low0 + sy + sh / 2) / fh
        crop = face.astype(np.float32) / 255.0
        feats = [1.0, (fx + fw / 2) / w, (fy + fh / 2) / h, fw / w, len(centres) / 2, eye_distance, eye_tilt,
                 eye_offset, smile, smile_width, smile_y, float(crop.mean()), float(crop.std())]
        return np.asarray(feats, dtype=np.float32)

    def close(self) -> None:
        pass


def make_backend(name: str) -> MediaPipeFaces | HaarFaces:
    if name == "mediapipe":
        return MediaPipeFaces()
    if name == "opencv":
        return HaarFaces()
    raise ConfigError(f"vision backend {name!r}: choose mediapipe or opencv")


# ---------------------------------------------------------------------- frames
def sample_frames(path: str | Path, fps: float, max_len: int, max_side: int) -> tuple[list[np.ndarray], float]:
    """BGR frames of a video at ``fps`` (at most ``max_len``, evenly covering it) and its duration in seconds.

    Raises :class:`ClipError` for a file that cannot be opened, has no readable
    frame, or stops well before its declared frame count (truncated).
    """
    cv2 = _cv2()
    p = Path(path)
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise ClipError(f"{p.name}: cannot open the video (undecodable, truncated or not a video)")
        rate = cap.get(cv2.CAP_PROP_FPS)
        rate = rate if rate and math.isfinite(rate) and rate > 0 else 25.0
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if declared <= 0:
            declared = _count_frames(cap)
            cap.release()
            cap = cv2.VideoCapture(str(p))
        if declared <= 0:
            raise ClipError(f"{p.name}: no video frame could be read (undecodable)")
        seconds = declared / rate
        n = steps_for(seconds, fps, max_len, declared)
        targets = np.floor((np.arange(n) + 0.5) * declared / n).astype(np.int64)
        wanted = set(targets.tolist())
        frames: dict[int, np.ndarray] = {}
        read = 0
        for i in range(int(targets[-1]) + 1):
            if not cap.grab():
                break
            read = i + 1
            if i in wanted:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    break
                frames[i] = _shrink(cv2, frame, max_side)
    finally:
        cap.release()
    if read == 0:
        raise ClipError(f"{p.name}: no video frame could be decoded (undecodable)")
    if read < int(targets[-1]) + 1 and read < TRUNCATED_SHARE * declared:
        raise ClipError(f"{p.name}: truncated video: decoded {read} of {declared} frames")
    if not frames:
        raise ClipError(f"{p.name}: no sampled video frame could be decoded (corrupt)")
    return [frames[i] for i in targets.tolist() if i in frames], seconds


def _count_frames(cap) -> int:  # type: ignore[no-untyped-def]
    n = 0
    while cap.grab():
        n += 1
    return n


def _shrink(cv2, frame: np.ndarray, max_side: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class VisionExtractor:
    """Per-frame face features of a video with the chosen backend."""

    def __init__(self, backend: str = "opencv", fps: float = 5.0, max_len: int = 150, max_side: int = 480) -> None:
        self.backend_name = backend
        self.backend = make_backend(backend)
        self.names = self.backend.names
        self.dim = len(self.names)
        self.fps, self.max_len, self.max_side = float(fps), int(max_len), int(max_side)

    def frame_features(self, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(T, D)`` features and the ``(T,)`` face mask of a list of BGR frames."""
        seq = np.zeros((len(frames), self.dim), dtype=np.float32)
        face = np.zeros(len(frames), dtype=bool)
        for t, frame in enumerate(frames):
            f = self.backend(frame)
            if f is not None:
                seq[t], face[t] = f, True
        return seq, face

    def __call__(self, path: str | Path) -> VisionFeatures:
        frames, seconds = sample_frames(path, self.fps, self.max_len, self.max_side)
        seq, face = self.frame_features(frames)
        if not face.any():
            raise ModalityMissing(f"no face in any of {len(frames)} sampled frames of {Path(path).name}")
        return VisionFeatures(seq=seq, face=face, seconds=seconds)

    def close(self) -> None:
        self.backend.close()
