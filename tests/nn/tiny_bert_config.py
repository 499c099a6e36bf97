"""The tiny BERT of the text-encoder tests: its vocabulary, token length and how it is saved."""

from pathlib import Path

import torch

#: vocabulary size and token length of the tiny BERT's test inputs
VOCAB, L = 40, 10


def save_tiny_bert(path: Path) -> Path:
    """Save a randomly initialised 2-layer, 16-wide BERT (seed 0) to ``path``; nothing is downloaded."""
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, type_vocab_size=2,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    return path
