"""Tiny, fast settings shared by the experiment tests."""

from __future__ import annotations

import os

import pytest

from pg_server import PostgresUnavailable, start, stop

#: sim-msa small enough that a 2-epoch run takes about a second.
TINY_DATA = {"n_train": 160, "n_valid": 48, "n_test": 64}
TINY_SETS = ["hidden=16", "head_hidden=16", "batch_size=32"]


@pytest.fixture(scope="session")
def tiny_data() -> dict:
    return dict(TINY_DATA)


@pytest.fixture(scope="session")
def tiny_sets() -> list[str]:
    return list(TINY_SETS)


def _reachable(url: str) -> str | None:
    """None if a connection works, else why not."""
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure is a reason to try the next way
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


@pytest.fixture(scope="session")
def postgres_url():
    pytest.importorskip("psycopg2", reason="psycopg2 (the PostgreSQL driver, in the experiments extra) is not installed")
    reasons = []
    url = os.environ.get("MMIB_TEST_POSTGRES_URL")
    if url:
        why = _reachable(url)
        if why is None:
            yield url
            return
        reasons.append(f"MMIB_TEST_POSTGRES_URL is set but unreachable ({why})")
    try:
        server = start()
    except PostgresUnavailable as exc:
        reasons.append(f"cannot start a local PostgreSQL cluster: {exc}")
        pytest.skip("; ".join(reasons))
    try:
        yield server.url
    finally:
        stop(server.directory)
