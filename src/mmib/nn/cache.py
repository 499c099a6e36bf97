"""Per-sample feature caches for frozen encoders: each sample's features computed once per run.

A frozen feature extractor (a BERT-type text encoder with ``trainable=false``) maps
the same input to the same features in every epoch, and it is most of the cost of a
training step. :class:`FeatureCache` stores those features by dataset row
(``Batch.index``) and, next to them, the input they were computed from (the key,
e.g. the token ids): a lookup is a hit only when the stored key equals the batch's,
so a cache can never hand back another sample's features (another dataset with the
same row numbers simply misses and overwrites).

Storage is allocated on the first store, ``(N, D)`` float32 plus the keys: in memory
below ``memory_limit`` bytes, else as ``numpy.memmap`` files in a temporary directory
(``TMPDIR``) that :meth:`FeatureCache.close` removes.

The mechanism is general: any module with a truthy ``uses_feature_cache`` attribute
and a ``feature_cache`` attribute takes part. :func:`feature_caches` (used by
:meth:`mmib.train.engine.Trainer.fit` around a whole run) attaches one cache per such
module and detaches and deletes them afterwards; the module decides when it may use
its cache (the text encoder: only while its backbone is frozen).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

#: Caches up to this many bytes (features + keys) stay in memory; larger ones are memory-mapped on disk.
MEMORY_LIMIT = 64 * 2**20


class FeatureCache:
    """Features ``(N, D)`` of dataset rows ``0..N-1``, each validated by the key it was computed from.

    Args:
        n: number of dataset rows (indices outside ``[0, n)`` are never cached).
        memory_limit: bytes above which the arrays are ``numpy.memmap`` files on disk.
        directory: where memory-mapped files go (default: a new temporary directory).
    """

    def __init__(self, n: int, memory_limit: int = MEMORY_LIMIT, directory: str | Path | None = None) -> None:
        if n < 0:
            raise ValueError(f"FeatureCache: n must be >= 0, got {n}")
        self.n = int(n)
        self.memory_limit = int(memory_limit)
        self._directory = Path(directory) if directory is not None else None
        self._tmp: Path | None = None
        self.values: np.ndarray | None = None
        self.keys: np.ndarray | None = None
        self.filled = np.zeros(self.n, dtype=bool)
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------ storage
    @property
    def on_disk(self) -> bool:
        return isinstance(self.values, np.memmap)

    @property
    def path(self) -> Path | None:
        """The directory holding the memory-mapped files (None when in memory or not yet allocated)."""
        return self._tmp if self.on_disk else None

    def _allocate(self, dim: int, key_shape: tuple[int, ...]) -> None:
        nbytes = self.n * (dim * 4 + int(np.prod(key_shape, dtype=np.int64)) * 8)
        if nbytes <= self.memory_limit:
            self.values = np.zeros((self.n, dim), dtype=np.float32)
            self.keys = np.zeros((self.n, *key_shape), dtype=np.int64)
            return
        root = self._directory
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix="mmib-feature-cache-", dir=root))
        self.values = np.lib.format.open_memmap(self._tmp / "values.npy", "w+", np.float32, (self.n, dim))
        self.keys = np.lib.format.open_memmap(self._tmp / "keys.npy", "w+", np.int64, (self.n, *key_shape))

    def close(self) -> None:
        """Drop the stored features and delete any files on disk."""
        self.values = self.keys = None
        self.filled[:] = False
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def clear(self) -> None:
        """Forget every stored row (e.g. when the encoder's weights change); keeps the storage."""
        self.filled[:] = False

    # ------------------------------------------------------------------ access
    @staticmethod
    def _as_keys(keys: Tensor) -> np.ndarray:
        return keys.detach().to("cpu", torch.int64).numpy()

    def lookup(self, index: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """``(values, hit)``: ``hit`` ``(B,)`` bool marks rows stored with an identical key;
        ``values`` ``(hits, D)`` float32 holds their features, in batch order."""
        idx = index.detach().cpu().numpy().astype(np.int64, copy=False)
        hit = np.zeros(idx.shape[0], dtype=bool)
        if self.values is not None and self.keys is not None:
            k = self._as_keys(keys)
            if k.shape[1:] == self.keys.shape[1:]:
                inside = np.flatnonzero((idx >= 0) & (idx < self.n))
                rows = idx[inside]
                ok = self.filled[rows]
                if ok.any():
                    cand = inside[ok]
                    same = (self.keys[idx[cand]] == k[cand]).reshape(cand.shape[0], -1).all(1)
                    hit[cand[same]] = True
        n_hit = int(hit.sum())
        self.hits += n_hit
        self.misses += hit.shape[0] - n_hit
        dim = 0 if self.values is None else self.values.shape[1]
        values = np.asarray(self.values[idx[hit]]) if n_hit else np.zeros((0, dim), dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(values)), torch.from_numpy(hit)

    def store(self, index: Tensor, keys: Tensor, values: Tensor) -> None:
        """Store ``values`` ``(B, D)`` for rows ``index`` ``(B,)`` computed from ``keys`` ``(B, ...)``."""
        if values.dim() != 2 or values.shape[0] != index.shape[0] or keys.shape[0] != index.shape[0]:
            raise ValueError(
                f"FeatureCache.store: index {tuple(index.shape)}, keys {tuple(keys.shape)} and values "
                f"{tuple(values.shape)} must share the batch dimension (values 2-d)"
            )
        k = self._as_keys(keys)
        if self.values is None:
            self._allocate(int(values.shape[1]), tuple(k.shape[1:]))
        assert self.values is not None and self.keys is not None
        if values.shape[1] != self.values.shape[1] or k.shape[1:] != self.keys.shape[1:]:
            return  # another layout (e.g. a different token length): not cacheable here
        idx = index.detach().cpu().numpy().astype(np.int64, copy=False)
        inside = (idx >= 0) & (idx < self.n)
        if not inside.any():
            return
        rows = idx[inside]
        self.values[rows] = values.detach().to("cpu", torch.float32).numpy()[inside]
        self.keys[rows] = k[inside]
        self.filled[rows] = True


def cache_users(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` that can use a feature cache now (``uses_feature_cache`` true)."""
    return [m for m in model.modules() if getattr(m, "uses_feature_cache", False)]


@contextmanager
def feature_caches(
    model: nn.Module, n_samples: int, memory_limit: int = MEMORY_LIMIT, directory: str | Path | None = None
) -> Iterator[list[FeatureCache]]:
    """Attach a :class:`FeatureCache` over ``n_samples`` dataset rows to every module of ``model``
    that can use one, for the duration of the block; afterwards detach and delete them."""
    users = cache_users(model)
    caches = [FeatureCache(n_samples, memory_limit, directory) for _ in users]
    previous = [getattr(m, "feature_cache", None) for m in users]
    for m, c in zip(users, caches):
        m.feature_cache = c
    try:
        yield caches
    finally:
        for m, c, prev in zip(users, caches, previous):
            m.feature_cache = prev
            c.close()
