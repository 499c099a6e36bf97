"""Run directories: safe file formats, atomic writes, a lock, and checks before a run starts.

A run directory holds ``config.yaml`` (the full :class:`~mmib.config.RunConfig`),
``metrics.jsonl`` (one line per epoch), ``model.safetensors`` (the best weights
with everything needed to rebuild the model), ``checkpoint.safetensors`` (the
last completed epoch, for ``--resume``; removed once the run finishes),
``results.json`` and, while a process writes the run, ``run.lock`` (its pid).

Nothing in a run directory is a pickle: weights, optimizer state, RNG states and
standardiser statistics are tensors in a `safetensors
<https://huggingface.co/docs/safetensors>`_ file, and everything else (options,
the data spec, extractor settings, counters) is JSON in that file's header
(:func:`write_state` / :func:`read_state`). Reading a run therefore never runs
code from it. Runs written by mmib before this format (``model.pt``,
``checkpoint.pt``: pickles) are refused with a message that points to ``mmib
convert RUN_DIR`` (:func:`legacy_error`), the one explicit place that unpickles
them.

Every file is written to a temporary ``.NAME.*.tmp`` file in the same directory,
fsynced and moved into place with ``os.replace``, so an interrupted write never
leaves a torn file; leftovers of killed writes are removed by the next process
that takes the run's lock (:func:`remove_stale_temps`). Write failures (a full
disk, a read-only folder) are :class:`~mmib.errors.RunError` naming the file.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmib.errors import RunError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
MODEL = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
RESULTS = "results.json"
LOCK = "run.lock"
#: Pickled files of runs written before the safetensors format; only ``mmib convert`` opens them.
LEGACY_MODEL = "model.pt"
LEGACY_CHECKPOINT = "checkpoint.pt"
LEGACY_FILES = (LEGACY_MODEL, LEGACY_CHECKPOINT)

MODEL_FORMAT = "mmib-model"
CHECKPOINT_FORMAT = "mmib-checkpoint"
STATE_VERSION = 2
_META_KEY = "mmib"
_TMP_SUFFIX = ".tmp"


# ----------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_error(path: Path, exc: OSError) -> RunError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = ""
    if exc.errno == errno.ENOSPC:
        hint = "; free some space or choose another folder"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; choose a folder you can write to"
    return RunError(f"{path}: cannot write ({reason}){hint}")


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunError(f"{folder}: exists and is not a folder") from None
    except NotADirectoryError:
        raise RunError(f"{folder}: cannot create it (a part of the path is a file, not a folder)") from None
    except OSError as exc:
        raise _write_error(folder, exc) from None


def atomic_write_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder,
    which is fsynced and renamed over ``path``. OSError (full disk, read-only folder) -> RunError."""
    path = Path(path)
    _mkdir(path.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, rename)."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


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


# ----------------------------------------------------------------------------- reading
def _read_text(p: Path, what: str) -> str:
    if not p.is_file():
        raise RunError(f"{p}: no such file")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RunError(f"{p}: cannot read {what} ({reason})") from None


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(_read_text(p, "JSON"))
    except json.JSONDecodeError as exc:
        raise RunError(f"{p}: not valid JSON ({exc})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for i, line in enumerate(_read_text(p, "JSON lines").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunError(f"{p}:{i}: not valid JSON") from None
    return rows


# ----------------------------------------------------------------------------- safe state files
def pack(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``obj`` into a JSON-able tree and the tensors it holds (keyed by their path in ``obj``).

    Admits None, bool, int, float (NaN/inf too), str, list, tuple, dict (str or int keys),
    tensors, NumPy arrays of numbers and NumPy scalars; anything else is a TypeError.
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, where: str) -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, torch.Tensor):
            key = where or "tensor"
            tensors[key] = x.detach()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in "biuf":
                raise TypeError(f"{where}: NumPy arrays of {x.dtype} cannot be stored")
            return {"__ndarray__": x.ravel().tolist(), "dtype": x.dtype.str, "shape": list(x.shape)}
        if isinstance(x, np.generic):
            return enc(x.item(), where)
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{where}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{where}/{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v, f"{where}/{k}" if where else k) for k, v in x.items()}
            items = []
            for k, v in x.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError(f"{where}: dict key {k!r} cannot be stored")
                items.append([k, enc(v, f"{where}/{k}")])
            return {"__items__": items}
        raise TypeError(f"{where or 'value'}: a {type(x).__name__} cannot be stored in a run directory")

    return enc(obj, ""), tensors


def unpack(tree: Any, tensors: dict[str, torch.Tensor], where: str = "file") -> Any:
    """The inverse of :func:`pack`; a malformed tree is a RunError naming ``where``."""

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            key = x["__tensor__"]
            if key not in tensors:
                raise RunError(f"{where}: tensor {key!r} is missing")
            return tensors[key]
        if "__ndarray__" in x:
            try:
                return np.asarray(x["__ndarray__"], dtype=np.dtype(x["dtype"])).reshape(x["shape"])
            except (TypeError, ValueError, KeyError) as exc:
                raise RunError(f"{where}: malformed array ({exc})") from None
        if "__tuple__" in x:
            return tuple(dec(v) for v in x["__tuple__"])
        if "__items__" in x:
            try:
                return {k: dec(v) for k, v in x["__items__"]}
            except (TypeError, ValueError):
                raise RunError(f"{where}: malformed mapping") from None
        return {k: dec(v) for k, v in x.items()}

    return dec(tree)


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with no two sharing memory (safetensors refuses both); copies only where needed."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[str, int]] = set()
    for k, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if not t.is_contiguous():
            t = t.contiguous()
        if t.numel():
            storage = t.untyped_storage()
            ident = (str(storage.device), storage.data_ptr())
            if ident in seen:
                t = t.clone()
            else:
                seen.add(ident)
        out[k] = t
    return out


#: dtypes NumPy holds as they are (not bfloat16 and the float8 kinds)
_NUMPY_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16,
                           torch.int8, torch.uint8, torch.bool})
#: files up to this size go through safetensors' NumPy writer, which builds the file in memory
_NUMPY_WRITE_MAX_BYTES = 64 * 2**20


def write_state(path: str | Path, kind: str, obj: dict[str, Any]) -> None:
    """Write ``obj`` (see :func:`pack`) atomically as a safetensors file of format ``kind``.

    Small files of NumPy dtypes (a small model's checkpoint after every epoch) are serialised by
    ``safetensors.numpy`` into the same bytes as ``safetensors.torch`` writes, in about a third of
    its serialising time for a few dozen tensors (a concat checkpoint's whole write 7.9 -> 6.5 ms);
    others by ``safetensors.torch`` straight to the file."""
    tree, tensors = pack(obj)
    header = json.dumps({"format": kind, "version": STATE_VERSION, "payload": tree})
    tensors = _storable(tensors)
    metadata = {_META_KEY: header}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if size <= _NUMPY_WRITE_MAX_BYTES and all(t.dtype in _NUMPY_DTYPES for t in tensors.values()):
        from safetensors.numpy import save

        atomic_write_bytes(path, save({k: t.numpy() for k, t in tensors.items()}, metadata=metadata))
        return
    from safetensors.torch import save_file

    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _open_header(p: Path, kind: str, what: str) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing error
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"{p}: not a readable {what} ({type(exc).__name__}: {reason})") from None
    try:
        header = json.loads(meta[_META_KEY])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise RunError(f"{p}: not an mmib {what} (no mmib header)") from None
    if not isinstance(header, dict) or header.get("format") != kind:
        found = header.get("format") if isinstance(header, dict) else None
        raise RunError(f"{p}: not an mmib {what} (format {found!r}, expected {kind!r})")
    version = header.get("version")
    if not isinstance(version, int) or version > STATE_VERSION:
        raise RunError(f"{p}: written by a newer mmib (format version {version}); upgrade mmib to read it")
    return header


def read_state_header(path: str | Path, kind: str, what: str = "run file") -> dict[str, Any]:
    """The JSON part of a state file, without loading its tensors (tensor entries stay markers)."""
    p = Path(path)
    if not p.is_file():
        raise RunError(f"{p}: no such file")
    payload = _open_header(p, kind, what).get("payload")
    if not isinstance(payload, dict):
        raise RunError(f"{p}: not an mmib {what} (malformed header)")
    return payload


def read_state(path: str | Path, kind: str, what: str = "run file") -> dict[str, Any]:
    """Read a file written by :func:`write_state` (no code runs); errors name the file."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise RunError(f"{p}: no such file")
    header = _open_header(p, kind, what)
    try:
        with safe_open(str(p), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"{p}: not a readable {what} ({type(exc).__name__}: {reason})") from None
    obj = unpack(header.get("payload"), tensors, str(p))
    if not isinstance(obj, dict):
        raise RunError(f"{p}: not an mmib {what} (malformed header)")
    return obj


def require_keys(obj: dict[str, Any], keys: Iterable[str], path: str | Path, what: str) -> None:
    """RunError naming the first of ``keys`` missing from ``obj``."""
    for key in keys:
        if key not in obj or obj[key] is None:
            raise RunError(f"{path}: has no {key!r} (not a complete {what})")


# ----------------------------------------------------------------------------- old-format runs
def legacy_error(run_dir: str | Path, name: str) -> RunError:
    return RunError(
        f"{run_dir}: an old-format run ({name} is a pickle, which can run code when loaded, so mmib no longer "
        f"opens it); if you trust its source, convert it once with: mmib convert {run_dir}"
    )


def legacy_files(run_dir: str | Path) -> list[Path]:
    p = Path(run_dir)
    return [p / n for n in LEGACY_FILES if (p / n).is_file()]


def model_path(run_dir: str | Path) -> Path:
    """``RUN/model.safetensors``; RunError if the run has none (pointing to ``mmib convert`` for old runs)."""
    p = Path(run_dir)
    if (p / MODEL).is_file():
        return p / MODEL
    if (p / LEGACY_MODEL).is_file():
        raise legacy_error(p, LEGACY_MODEL)
    if (p / CHECKPOINT).is_file() or (p / LEGACY_CHECKPOINT).is_file():
        raise RunError(f"{p}: the run has no {MODEL} yet (unfinished? resume it with --resume)")
    raise RunError(f"{p}: not a run directory (no {MODEL})")


def check_run_dir(path: str | Path) -> Path:
    """A directory that holds a finished or resumable run, else RunError."""
    p = Path(path)
    if not p.is_dir():
        raise RunError(f"{p}: no such run directory")
    if not (p / MODEL).is_file() and not (p / CHECKPOINT).is_file():
        for name in LEGACY_FILES:
            if (p / name).is_file():
                raise legacy_error(p, name)
        raise RunError(f"{p}: not a run directory (no {MODEL})")
    return p


def is_unfinished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a resumable (or old-format resumable) run."""
    p = Path(run_dir)
    return (p / CHECKPOINT).is_file() or (p / LEGACY_CHECKPOINT).is_file()


# ----------------------------------------------------------------------------- before a run starts
def remove_stale_temps(run_dir: str | Path) -> list[str]:
    """Delete ``.*.tmp`` files left in ``run_dir`` by writes that were killed; returns their names.

    Call it only while holding the run's :class:`RunLock` (then no live writer owns them)."""
    p = Path(run_dir)
    removed = []
    if not p.is_dir():
        return removed
    for f in p.iterdir():
        if f.name.startswith(".") and f.name.endswith(_TMP_SUFFIX) and f.is_file():
            try:
                f.unlink()
                removed.append(f.name)
            except OSError:
                pass
    return sorted(removed)


def prepare_dir(run_dir: str | Path, need_bytes: int = 0, create: bool = True) -> Path:
    """Create ``run_dir`` and make sure files can be written there, before any training.

    RunError when ``run_dir`` is an existing file, cannot be created, is read-only, or its
    disk has less than ``need_bytes`` free (a probe file is written, fsynced and removed).
    With ``create=False`` nothing is created: the probe goes to the nearest existing folder
    on the way to ``run_dir`` (a check before data are loaded that leaves no empty folder)."""
    p = Path(run_dir)
    if p.exists() and not p.is_dir():
        raise RunError(f"{p}: exists and is not a folder; choose another output folder")
    where = p
    if create:
        _mkdir(p)
    else:
        while not where.exists() and where != where.parent:
            where = where.parent
        if not where.is_dir():
            raise RunError(f"{p}: cannot create it ({where} is a file, not a folder)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mmib-probe.", suffix=_TMP_SUFFIX, dir=where)
    except OSError as exc:
        raise _write_error(p, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise _write_error(p, exc) from None
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
    if need_bytes > 0:
        free = shutil.disk_usage(where).free
        if free < need_bytes:
            raise RunError(f"{p}: only {free / 2**20:.1f} MiB free on its disk; the run needs about "
                           f"{need_bytes / 2**20:.1f} MiB (weights, checkpoint and their temporary copies)")
    return p


# ----------------------------------------------------------------------------- the lock
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def _process_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _holder_text() -> str:
    pid = os.getpid()
    return json.dumps({"pid": pid, "host": socket.gethostname(), "start": _process_start(pid),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"


def _describe_holder(text: str) -> str:
    try:
        d = json.loads(text)
        return f"process {d['pid']} on {d['host']} since {d['since']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "another process"


def _holder_alive(text: str) -> bool:
    try:
        d = json.loads(text)
        pid, host = int(d["pid"]), d["host"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not d.get("start") or _process_start(pid) == d["start"]


class RunLock:
    """An exclusive lock on a run directory: ``run.lock`` holding the owner's pid.

    Held from the start to the end of training (``with RunLock(dir): ...``); a second
    process gets a RunError that names the holder. The lock is an ``flock`` on the file,
    which the kernel releases when its process dies (even by SIGKILL), so a lock file left
    by a dead process is taken over; :attr:`note` then says so.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.note: str | None = None
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        _mkdir(self.run_dir)
        if fcntl is None:  # pragma: no cover - no flock: exclusive creation, stale if the pid is gone
            return self._acquire_exclusive()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _write_error(self.path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode("utf-8", "replace")
                os.close(fd)
                raise RunError(f"{self.run_dir}: in use by {_describe_holder(holder)} (lock {self.path}); "
                               "wait for it to finish or stop it") from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
        previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if previous:
            self.note = f"{self.run_dir}: took over the stale lock of {_describe_holder(previous)}, which no longer runs"
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, _holder_text().encode())
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise _write_error(self.path, exc) from None
        self._fd = fd
        return self

    def _acquire_exclusive(self) -> "RunLock":  # pragma: no cover - Windows only
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                previous = self.path.read_text(errors="replace")
                if _holder_alive(previous):
                    raise RunError(f"{self.run_dir}: in use by {_describe_holder(previous)} (lock {self.path}); "
                                   "wait for it to finish or stop it") from None
                self.note = f"{self.run_dir}: took over the stale lock of {_describe_holder(previous)}"
                self.path.unlink(missing_ok=True)
                continue
            os.write(fd, _holder_text().encode())
            self._fd = fd
            return self
        raise RunError(f"{self.run_dir}: cannot take the lock {self.path}")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: a waiter then sees a new file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ----------------------------------------------------------------------------- mmib convert
def load_legacy_pickle(path: str | Path) -> Any:
    """Unpickle an old-format ``model.pt``/``checkpoint.pt``.

    .. warning:: This runs any code the file holds. It exists only for ``mmib convert``,
       which a user runs explicitly on a run they trust; nothing else calls it.
    """
    p = Path(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user-facing error
        raise RunError(f"{p}: not a readable old-format mmib file ({type(exc).__name__}: {exc})") from None


def convert_legacy_run(run_dir: str | Path, config: dict[str, Any] | None) -> list[str]:
    """Rewrite an old-format run in the safetensors format; returns what was converted.

    Unpickles ``model.pt`` and ``checkpoint.pt`` (see :func:`load_legacy_pickle`), writes
    ``model.safetensors`` and ``checkpoint.safetensors`` (each atomically), and only then
    removes the pickles, so an interrupted conversion can simply be run again. ``config``
    (the run's ``config.yaml``) is recorded in the checkpoint as the configuration the run
    resumes with. Runs under the run's lock."""
    p = Path(run_dir)
    done = []
    with RunLock(p):
        remove_stale_temps(p)
        jobs = [(LEGACY_CHECKPOINT, CHECKPOINT, CHECKPOINT_FORMAT), (LEGACY_MODEL, MODEL, MODEL_FORMAT)]
        for old, new, kind in jobs:
            src = p / old
            if not src.is_file():
                continue
            obj = load_legacy_pickle(src)
            if not isinstance(obj, dict) or obj.get("format") != kind:
                raise RunError(f"{src}: not an old-format mmib {'checkpoint' if kind == CHECKPOINT_FORMAT else 'model'} file")
            payload = {k: v for k, v in obj.items() if k not in ("format", "version")}
            if kind == CHECKPOINT_FORMAT:
                require_keys(payload, ("state", "model", "optimizers", "rng"), src, "mmib checkpoint")
                payload.setdefault("config", config)
                payload.setdefault("data", None)
            else:
                require_keys(payload, ("model", "options", "spec", "state_dict"), src, "mmib model file")
            try:
                write_state(p / new, kind, payload)
            except TypeError as exc:
                raise RunError(f"{src}: holds something other than tensors and plain data ({exc})") from None
            done.append(f"{old} -> {new}")
        for old, _, _ in jobs:
            (p / old).unlink(missing_ok=True)
    return done
