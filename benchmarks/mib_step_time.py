"""Training-step time of C-MIB relative to ``concat`` on MOSI-shaped sequence inputs.

Both models get the same encoders (LSTM by default, or ``--encoder transformer``)
on precomputed features: text 50x768, audio 50x74, vision 50x47, batch 32. A
step is ``objective -> backward -> Adam step`` exactly as the engine runs it. To
keep the comparison fair on a shared machine, the two models alternate in
rounds of ``--steps / --rounds`` steps after a warm-up, in one process, and the
median per-step time of each is compared (wall clock, and process CPU time,
which other jobs on a busy machine disturb less when ``--threads 1``). Target: C-MIB / concat <= 1.3.

    .venv/bin/python benchmarks/mib_step_time.py                  # LSTM encoders
    .venv/bin/python benchmarks/mib_step_time.py --encoder transformer
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmib.config import TrainConfig
from mmib.data.dataset import Batch
from mmib.models.complexity import MOSI_DIMS, spec_from_dims
from mmib.models.registry import build_model


def make_batch(batch_size: int, seq_len: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(batch_size, seq_len, d, generator=g) for m, d in MOSI_DIMS.items()}
    lengths = {m: torch.randint(seq_len // 2, seq_len + 1, (batch_size,), generator=g) for m in MOSI_DIMS}
    lengths["text"] = torch.full((batch_size,), seq_len)
    for m, x in feats.items():
        x[torch.arange(seq_len).unsqueeze(0) >= lengths[m].unsqueeze(1)] = 0.0
    return Batch(feats, lengths, 3 * torch.tanh(torch.randn(batch_size, generator=g)), torch.arange(batch_size))


def timed_steps(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batch: Batch, steps: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each of ``steps`` training steps."""
    wall, cpu = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        model.objective(batch, "main", "main").total.backward()
        opt.step()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="lstm", help="encoder of every modality: lstm (default), transformer, conv1d")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--steps", type=int, default=50, help="timed steps per model (default 50)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds the steps are split into")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra C-MIB option, e.g. fusion=tensor (repeatable)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = spec_from_dims(MOSI_DIMS, args.seq_len)
    common = {"encoder": args.encoder}
    from mmib.config import parse_value

    extra = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.sets)}
    models = {"concat": build_model("concat", spec, **common), "c-mib": build_model("c-mib", spec, **common, **extra)}
    cfg = TrainConfig()
    opts = {n: torch.optim.Adam([q for g in m.param_groups(m.parameters(), cfg) for q in g.params], lr=1e-3)
            for n, m in models.items()}
    batch = make_batch(args.batch_size, args.seq_len)
    for n, m in models.items():
        m.train()
        timed_steps(m, opts[n], batch, args.warmup)
    times: dict[str, list[float]] = {n: [] for n in models}
    cpu: dict[str, list[float]] = {n: [] for n in models}
    per_round = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        for n, m in models.items():
            w, c = timed_steps(m, opts[n], batch, per_round)
            times[n] += w
            cpu[n] += c
    med = {n: statistics.median(t) for n, t in times.items()}
    med_cpu = {n: statistics.median(t) for n, t in cpu.items()}
    params = {n: m.num_parameters() for n, m in models.items()}
    print(f"MOSI-shaped inputs: text {args.seq_len}x768, audio {args.seq_len}x74, vision {args.seq_len}x47 "
          f"(precomputed), batch {args.batch_size}, encoder {args.encoder}, {torch.get_num_threads()} thread(s), "
          f"{len(times['concat'])} timed steps per model in {args.rounds} alternating rounds"
          + (f", C-MIB options {extra}" if extra else ""))
    for n in models:
        print(f"  {n:7s} median step {1000 * med[n]:8.2f} ms wall, {1000 * med_cpu[n]:8.2f} ms CPU   "
              f"params {params[n]:,}")
    ratio = med["c-mib"] / med["concat"]
    ratio_cpu = med_cpu["c-mib"] / med_cpu["concat"]
    print(f"  C-MIB / concat step time: {ratio:.3f} wall, {ratio_cpu:.3f} CPU  "
          f"(target <= 1.3: {'met' if max(ratio, ratio_cpu) <= 1.3 else 'NOT met'})")
    print(f"  C-MIB / concat parameters: {params['c-mib'] / params['concat']:.3f}")


if __name__ == "__main__":
    main()
