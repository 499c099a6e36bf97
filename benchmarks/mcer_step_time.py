"""Training-step time of `mcer` relative to `concat` on MOSI-shaped sequences, and where MCER's time goes.

A synthetic :class:`~mmib.data.dataset.MultimodalDataset` of CMU-MOSI's shape:
text ``(N, 50, 768)`` (BERT-sized features, full length), audio ``(N, 50, 74)``
and vision ``(N, 50, 47)`` (random lengths in [25, 50], as unaligned features),
regression targets in [-3, 3]. Both models use their default options (shared
``lstm`` encoders for the three sequences) and the same batches of 32. One step =
``objective`` + ``backward`` + optimizer step over the model's own parameter
groups (as the engine runs it). MCER's label generator is allocated and past its
first epoch, so the per-batch label updates run too.

Then MCER is profiled with ``torch.profiler``: the top operators by self CPU time
(forward and backward), and the forward time of each top-level submodule
(``record_function`` ranges opened by module hooks; backward kernels are not
attributed to modules, so they appear in the operator table only).

Run: ``python benchmarks/mcer_step_time.py`` (``--threads``, ``--steps``, ``--batches``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from mmib.config import TrainConfig
from mmib.data.dataset import MultimodalDataset, TaskSpec
from mmib.models import build_model
from mmib.models.base import FitContext


def mosi_shaped(n: int, seq_len: int = 50, seed: int = 0) -> MultimodalDataset:
    g = torch.Generator().manual_seed(seed)
    dims = {"text": 768, "audio": 74, "vision": 47}
    feats = {m: torch.randn(n, seq_len, d, generator=g) for m, d in dims.items()}
    lengths = {"text": torch.full((n,), seq_len)}
    for m in ("audio", "vision"):
        lengths[m] = torch.randint(seq_len // 2, seq_len + 1, (n,), generator=g)
        feats[m][torch.arange(seq_len).unsqueeze(0) >= lengths[m].unsqueeze(1)] = 0.0
    y = (torch.rand(n, generator=g) * 6 - 3).round(decimals=1)
    splits = {"train": torch.arange(n)}
    return MultimodalDataset("mosi-shaped", feats, y, TaskSpec("regression"), splits, lengths=lengths)


def make_step(model, ds: MultimodalDataset, cfg: TrainConfig):
    plan = model.training_plan(cfg)
    stage = plan[0].stages[0]
    opt = torch.optim.Adam([{"params": g.params, "lr": g.lr} for g in stage.groups])

    def step(batch) -> None:
        opt.zero_grad(set_to_none=True)
        obj = model.objective(batch, plan[0].name, stage.name)
        obj.total.backward()
        opt.step()

    return step


def time_steps(step, batches, steps: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def components(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The units whose forward time is reported: each top-level module, each entry of a top-level
    ModuleDict/ModuleList (``gated.text__audio``), and each modality's encoder layers
    (``encoders.text``; MCER calls them through ``encode_steps``, not the container's forward)."""
    out: dict[str, torch.nn.Module] = {}
    for name, child in model.named_children():
        if name == "encoders":
            for m, enc in child.encoders.items():
                for sub, layer in enc.named_children():
                    out[f"encoders.{m}.{sub}"] = layer
        elif isinstance(child, (torch.nn.ModuleDict, torch.nn.ModuleList)):
            for key, item in child.named_children():
                out[f"{name}.{key}"] = item
        else:
            out[name] = child
    return out


def module_ranges(model: torch.nn.Module) -> list:
    """Forward hooks that open a ``record_function`` range per component (see :func:`components`)."""
    handles = []
    for name, child in components(model).items():
        ranges: list = []

        def pre(mod, args, _name=name, _ranges=ranges):
            r = record_function(f"module::{_name}")
            r.__enter__()
            _ranges.append(r)

        def post(mod, args, out, _ranges=ranges):
            _ranges.pop().__exit__(None, None, None)

        handles += [child.register_forward_pre_hook(pre), child.register_forward_hook(post)]
    return handles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8, help="distinct batches cycled through")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model and round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (machine drift hits both)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = mosi_shaped(args.batch_size * args.batches)
    batches = list(ds.batches("train", args.batch_size))
    cfg = TrainConfig(batch_size=args.batch_size)

    torch.manual_seed(0)
    models = {"concat": build_model("concat", ds.spec), "mcer": build_model("mcer", ds.spec)}
    mcer = models["mcer"]
    mcer.on_phase_start("main", FitContext(ds, cfg, torch.device("cpu"), torch.Generator()))
    mcer.train()
    with torch.no_grad():  # one pass of epoch 1 (centre sums), so that the timed steps update labels
        for b in batches:
            mcer.objective(b, "main", "main")
    mcer.labels.end_epoch()
    steps = {k: make_step(m.train(), ds, cfg) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.rounds):
        for k in models:
            times[k] += time_steps(steps[k], batches, args.steps, args.warmup)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    params = {k: m.num_parameters(trainable_only=True) for k, m in models.items()}
    print(f"MOSI-shaped sequences: batch {args.batch_size}, length 50, dims text 768 / audio 74 / vision 47; "
          f"{args.threads} thread(s), CPU; median of {args.rounds * args.steps} steps")
    for k in models:
        q = statistics.quantiles(times[k], n=4)
        print(f"  {k:7s} train step {med[k]:8.1f} ms  (IQR {q[0] * 1000:.1f}-{q[2] * 1000:.1f})  "
              f"{params[k]:,} parameters")
    print(f"  ratio mcer / concat: {med['mcer'] / med['concat']:.2f}x")

    # forward-only (evaluation) time: MCER evaluates only the multimodal task
    for k, m in models.items():
        m.eval()
        with torch.inference_mode():
            for b in batches[:2]:
                m(b)
            start = time.perf_counter()
            for b in batches:
                m(b)
        print(f"  {k:7s} inference {1000 * (time.perf_counter() - start) / len(batches):8.1f} ms per batch")
        m.train()

    # where MCER's step goes
    handles = module_ranges(mcer)
    step = steps["mcer"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.profile_steps):
            step(batches[i % len(batches)])
    for h in handles:
        h.remove()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nMCER profile over {args.profile_steps} steps: top {args.top} operators by self CPU time "
          "(forward + backward)")
    ops = sorted((e for e in events if not e.key.startswith("module::")), key=lambda e: -e.self_cpu_time_total)
    for e in ops[: args.top]:
        print(f"  {e.key[:60]:60s} {e.self_cpu_time_total / 1000 / args.profile_steps:9.1f} ms/step "
              f"{100 * e.self_cpu_time_total / total:5.1f}%  calls/step {e.count // args.profile_steps}")
    mods = {e.key.removeprefix("module::"): e.cpu_time_total / 1000 / args.profile_steps
            for e in events if e.key.startswith("module::")}
    families: dict[str, float] = {}
    for k, v in mods.items():
        fam = "encoders." + k.split(".")[1] if k.startswith("encoders.") else k.split(".")[0]
        families[fam] = families.get(fam, 0.0) + v
    step_ms = total / 1000 / args.profile_steps
    print(f"\nMCER forward time per component (inclusive, ms per step; the whole step is {step_ms:.1f} ms "
          "of CPU time, forward + backward + optimizer):")
    for k, v in sorted(families.items(), key=lambda kv: -kv[1]):
        print(f"  {k:16s} {v:9.1f} ms  {100 * v / step_ms:5.1f}%")
    fwd = sum(families.values())
    print(f"  {'(sum)':16s} {fwd:9.1f} ms  {100 * fwd / step_ms:5.1f}%  (the rest: backward, optimizer, loss glue)")


if __name__ == "__main__":
    main()
