"""Tiny, fast settings shared by the experiment tests."""

from __future__ import annotations

import pytest

#: sim-msa small enough that a 2-epoch run takes about a second.
TINY_DATA = {"n_train": 160, "n_valid": 48, "n_test": 64}
TINY_SETS = ["hidden=16", "head_hidden=16", "batch_size=32"]


@pytest.fixture(scope="session")
def tiny_data() -> dict:
    return dict(TINY_DATA)


@pytest.fixture(scope="session")
def tiny_sets() -> list[str]:
    return list(TINY_SETS)
