"""Engine overhead: one training epoch of `concat` on SIM-I through the engine vs a bare loop.

Both sides use the same module (same initial weights), the same batches (same
shuffling generator and batch size) and the same optimizer (Adam, lr 1e-3), in
one process. The engine side is ``Trainer._epoch``'s timed training pass (as
logged in metrics.jsonl ``seconds``); the whole ``fit`` with validation and
test evaluation is printed too. Run: ``python benchmarks/engine_overhead.py``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from mmib.config import TrainConfig
from mmib.data import load_dataset
from mmib.models import build_model
from mmib.train.engine import Trainer


def bare_epoch(model: torch.nn.Module, ds, batch_size: int, seed: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for batch in ds.batches("train", batch_size, shuffle=True, generator=gen):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch).prediction, batch.y)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def engine_epoch(model: torch.nn.Module, ds, batch_size: int, seed: int) -> tuple[float, float]:
    cfg = TrainConfig(epochs=1, batch_size=batch_size, seed=seed, progress=False, lr=1e-3)
    start = time.perf_counter()
    result = Trainer(model, ds, cfg).fit()
    return result.history[0]["seconds"], time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("sim-i", n_samples=args.samples)
    torch.manual_seed(0)
    base = build_model("concat", ds.spec)
    bare, eng, fit = [], [], []
    for r in range(args.repeats):  # alternate so drift in machine load hits both sides alike
        bare.append(bare_epoch(copy.deepcopy(base), ds, args.batch_size, seed=r))
        e, f = engine_epoch(copy.deepcopy(base), ds, args.batch_size, seed=r)
        eng.append(e)
        fit.append(f)
    b, e, f = statistics.median(bare), statistics.median(eng), statistics.median(fit)
    print(f"concat on SIM-I: {ds.split_size('train')} training samples, batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"bare PyTorch loop, one epoch : {b:.3f} s")
    print(f"engine training epoch        : {e:.3f} s")
    print(f"engine fit (epoch + valid/test evaluation): {f:.3f} s")
    print(f"ratio engine/bare (epoch)    : {e / b:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
