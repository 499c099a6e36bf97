"""Fixtures shared by the text-encoder tests."""

import pytest
from tiny_bert_config import save_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 2-layer BERT saved to a local directory (no download)."""
    pytest.importorskip("transformers")
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
