"""Shared fixtures: small generated datasets and quiet, fast training configs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Test models are tiny: one intra-op thread is as fast, and does not thrash when other
# processes (a compare worker, a second test run) share the cores.
torch.set_num_threads(1)


@pytest.fixture
def tiny_sim():
    """600-sample SIM-I with small sub-vectors (fast to train)."""
    from mmib.data.synthetic import make_sim

    ds = make_sim("sim-i", n_samples=600, seed=0, shared_dim=10, superfluous_dim=10, a1_dim=20, a2_dim=6)
    ds.standardize()
    return ds


@pytest.fixture
def tiny_msa():
    from mmib.data.synthetic import make_sim_msa

    ds = make_sim_msa(n_train=400, n_valid=100, n_test=200, seed=0)
    ds.standardize()
    return ds


@pytest.fixture
def tiny_msa_seq():
    from mmib.data.synthetic import make_sim_msa

    ds = make_sim_msa(n_train=120, n_valid=40, n_test=40, seed=0, seq_len=8)
    ds.standardize()
    return ds


@pytest.fixture
def fast_train():
    from mmib.config import TrainConfig

    return TrainConfig(epochs=3, batch_size=32, progress=False, patience=5)
