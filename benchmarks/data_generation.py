"""Generation time of the built-in synthetic datasets (issue target: 10,000 SIM samples in under 2 s).

Run: ``python benchmarks/data_generation.py [--samples 10000]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from mmib.data.synthetic import make_sim, make_sim_msa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.samples} samples, {args.threads} thread(s); best of 3")
    for name in ("sim-i", "sim-ii", "sim-iii"):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            ds = make_sim(name, n_samples=args.samples)
            times.append(time.perf_counter() - t)
        dims = "+".join(str(x.shape[1]) for x in ds.features.values())
        print(f"{name:8s} ({dims} features): {min(times):.3f} s  (target < 2 s)")
    for seq in (None, 50):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            n = args.samples
            make_sim_msa(n_train=int(n * 0.6), n_valid=int(n * 0.1), n_test=n - int(n * 0.6) - int(n * 0.1), seq_len=seq)
            times.append(time.perf_counter() - t)
        print(f"sim-msa {'vectors' if seq is None else f'seq_len={seq}'}: {min(times):.3f} s")


if __name__ == "__main__":
    main()
