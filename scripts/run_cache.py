"""The run cache of the results scripts: one JSON line per finished training run, keyed by its spec.

An interrupted script resumes from it; several processes may append to one cache (a line is written
in one call), so a script can be split into shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def run_key(data: str, model: str, options: Iterable[tuple[str, object]], seed: int) -> str:
    """The cache key of one run: dataset key, model, its (name, value) options and the training seed."""
    return json.dumps([data, model, [list(o) for o in options], seed])


def read_runs(path: Path) -> dict[str, dict]:
    """Every cached run of ``path`` by key (empty when the file does not exist)."""
    rows: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["key"]] = row
    return rows


def append_run(path: Path, row: dict) -> None:
    """Add one finished run (``row["key"]`` from :func:`run_key`) to the cache at ``path``."""
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
