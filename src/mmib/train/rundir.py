"""Run directories and atomic writes.

A run directory holds ``config.yaml`` (the full :class:`~mmib.config.RunConfig`),
``metrics.jsonl`` (one line per epoch), ``model.pt`` (the best weights with
everything needed to rebuild the model), ``checkpoint.pt`` (the last completed
epoch, for ``--resume``; removed once the run finishes) and ``results.json``.
Every file is written to a temporary file in the same directory and moved into
place with ``os.replace``, so an interrupted write never leaves a torn file.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mmib.errors import RunError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
MODEL = "model.pt"
CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.tolist())
    return value


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(_json_safe(r)) + "\n" for r in rows))


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise RunError(f"{p}: no such file")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{p}: not valid JSON ({exc})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{p}:{i}: not valid JSON") from None
    return rows


def torch_load(path: str | Path) -> Any:
    """Load a file this package wrote with :func:`atomic_torch_save`; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise RunError(f"{p}: no such file")
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing error
        raise RunError(f"{p}: not a readable mmib checkpoint ({type(exc).__name__}: {exc})") from None


def check_run_dir(path: str | Path) -> Path:
    """A directory that holds a finished or resumable run, else RunError."""
    p = Path(path)
    if not p.is_dir():
        raise RunError(f"{p}: no such run directory")
    if not (p / MODEL).is_file() and not (p / CHECKPOINT).is_file():
        raise RunError(f"{p}: not a run directory (no {MODEL})")
    return p
