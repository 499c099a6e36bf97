"""Helpers of the experiment modules; worker processes of the multi-run commands (reused across
tasks, started with the library imported)."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from mmib.experiments._util import WORKER_PRELOAD, process_context, slug


@pytest.mark.parametrize(("text", "expected"), [
    ("c-mib", "c-mib"), ("a b/c", "a-b-c"), ("..", "x"), (".", "x"), ("../../etc", "etc"), (".hidden", "hidden"),
    ("/abs/path", "abs-path"), ("a\0b", "a-b"), ("", "x"), ("v1.2", "v1.2"),
])
def test_slug_is_one_safe_path_component(text, expected):
    out = slug(text)
    assert out == expected and "/" not in out and out not in (".", "..") and not out.startswith(".")


def _worker_state(_: int) -> tuple[int, bool, bool]:
    return os.getpid(), "mmib.api" in sys.modules, "torch._dynamo" in sys.modules


@pytest.mark.slow
def test_pool_workers_are_reused_and_start_with_the_library_imported():
    ctx = process_context()
    if ctx.get_start_method() != "forkserver":  # pragma: no cover - platforms without fork
        pytest.skip("no forkserver on this platform")
    assert "mmib.api" in WORKER_PRELOAD
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        states = list(pool.map(_worker_state, range(3)))
    assert len({pid for pid, _, _ in states}) == 1  # one process ran every task
    assert all(api and dynamo for _, api, dynamo in states)  # imported before the first task, by the fork server
