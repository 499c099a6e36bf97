"""Cost of training with a BERT-base-size text encoder: time and memory against the encoder alone.

Issue 9. A randomly initialised ``transformers.BertConfig()`` encoder (12 layers, hidden 768,
110 M parameters; its config is written to a temporary directory and the weights are built
in-process, nothing is downloaded) and MOSI-shaped synthetic data (token ids of length 50 with
random lengths 10-50, audio 50x74, vision 50x47, regression labels in [-3, 3], batch 32).

Every configuration runs in a fresh subprocess (``--only NAME``), one at a time, so that each
one's peak RSS (``ru_maxrss``) is its own; the parent prints every child's output and a summary:

* ``text``: the text encoder alone (``HFTextEncoder``: BERT, CLS pooling, linear projection,
  L1 loss): forward, backward and an Adam step as the engine runs them; median of timed steps
  after a warm-up, the parts (forward, backward, Adam; forward without autograd), peak RSS.
* ``c-mib`` / ``mmim``: the model (default options, LSTM audio/vision encoders, the BERT text
  encoder fine-tuned at ``text_lr``) trained by the real :class:`~mmib.train.engine.Trainer` for
  one epoch of ``--steps`` + 1 batches; per-step wall time (MMIM: both stages, and each), RSS
  after 10 and after ``--steps`` steps (read just before the next step starts), peak RSS. After
  that (peak already read) the same process alternates model steps (the engine's step: every
  stage's zero_grad, objective, backward, clipping, Adam step) with steps of the text encoder
  alone, for a paired ratio that a changing load on a shared machine disturbs far less than a
  ratio across processes run minutes apart.
* ``text-bf16``: the text encoder alone, fp32 and bf16 autocast steps alternated in one process.
* ``c-mib-bf16``: C-MIB through the Trainer with ``precision=bf16``.
* ``frozen`` / ``frozen-cache``: C-MIB with ``text_encoder.trainable=false``, without and with
  the frozen-encoder feature cache, epoch time over ``--n-train`` samples (2 epochs with cache:
  the first fills it, the second reads it).
* ``last2``: C-MIB with ``text_encoder.train_last_k_layers=2`` (partially frozen), step time.

Targets (issue 9): C-MIB step <= 1.10x and peak RSS <= 1.10x of the encoder alone; MMIM's two
stages together <= 1.45x per batch and peak RSS <= 1.10x; RSS after 40 steps within 5 % of RSS
after 10.

    .venv/bin/python benchmarks/text_encoder_cost.py                  # everything (~20-40 min on 2 cores)
    .venv/bin/python benchmarks/text_encoder_cost.py --only c-mib     # one configuration
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIGS = ("text", "c-mib", "mmim", "text-bf16", "c-mib-bf16", "frozen", "frozen-cache", "last2")
RESULT = "RESULT "
GIB = 1024.0


# ---------------------------------------------------------------------- measurements
def rss_mb() -> float:
    """Current resident memory of this process (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss), MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def bert_dir(root: Path, tiny: bool = False) -> Path:
    """A directory with ``transformers.BertConfig()``'s defaults (bert-base size); no weights.
    ``tiny``: a 2-layer, 64-wide config instead (a quick check that the script runs)."""
    import transformers

    path = root / "bert-random"
    path.mkdir(exist_ok=True)
    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if tiny else {}
    transformers.BertConfig(**size).save_pretrained(path)
    return path


def make_data(n_train: int, seq_len: int = 50, seed: int = 0):
    """MOSI-shaped synthetic regression data: token ids, audio 50x74, vision 50x47.

    The ``text`` modality's features are a (N, 1) zero placeholder: the ``bert`` encoder reads
    only ``extras["text_bert"]`` (ids, attention mask, segment ids), tokenised here once.
    """
    import torch

    from mmib.data.dataset import MultimodalDataset, TaskSpec

    g = torch.Generator().manual_seed(seed)
    n = n_train
    lengths = torch.randint(10, seq_len + 1, (n,), generator=g)
    steps = torch.arange(seq_len).unsqueeze(0)
    mask = (steps < lengths.unsqueeze(1)).long()
    ids = torch.randint(1000, 30000, (n, seq_len), generator=g)
    ids[:, 0] = 101  # [CLS]
    ids[torch.arange(n), lengths - 1] = 102  # [SEP]
    ids = ids * mask
    text_bert = torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)
    feats, lens = {"text": torch.zeros(n, 1)}, {}
    for m, d in (("audio", 74), ("vision", 47)):
        ln = torch.randint(seq_len // 2, seq_len + 1, (n,), generator=g)
        x = torch.randn(n, seq_len, d, generator=g)
        x[steps.expand(n, -1) >= ln.unsqueeze(1)] = 0.0
        feats[m], lens[m] = x, ln
    y = 3 * torch.tanh(torch.randn(n, generator=g))
    return MultimodalDataset("mosi-shaped", feats, y, TaskSpec("regression"), {"train": torch.arange(n)},
                             lengths=lens, extras={"text_bert": text_bert})


def text_alone_steps(enc, batch, steps: int, precision: str = "fp32") -> dict[str, list[float]]:
    """Training steps of the text encoder alone, timed by part: forward, backward, Adam."""
    import torch
    import torch.nn.functional as F

    from mmib.train.engine import autocast_context

    params = [p for p in enc.parameters() if p.requires_grad]
    opt = getattr(enc, "_bench_opt", None)
    if opt is None:
        opt = enc._bench_opt = torch.optim.Adam(params, lr=5e-5)
    tokens, y = batch.extras["text_bert"], batch.y
    out: dict[str, list[float]] = {"fwd": [], "bwd": [], "adam": [], "step": []}
    enc.train()
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast_context(precision, torch.device("cpu")):
            loss = F.l1_loss(enc(tokens).float().mean(1), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        for k, v in zip(out, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            out[k].append(v)
    return out


def nograd_forward(enc, batch, steps: int) -> list[float]:
    import torch

    times = []
    with torch.no_grad():
        for _ in range(steps):
            t0 = time.perf_counter()
            enc(batch.extras["text_bert"])
            times.append(time.perf_counter() - t0)
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_trainer(model, ds, precision: str = "fp32", epochs: int = 1) -> dict[str, Any]:
    """Train ``model`` on ``ds`` with the engine; per-step wall times and RSS readings.

    A step is timed from the start of its first stage's objective to the start of the next
    step's (the last one to the end of the epoch); RSS after k steps is read at the start of
    step k + 1 (after its ``zero_grad``)."""
    from mmib.config import TrainConfig
    from mmib.train.engine import Trainer

    marks: list[tuple[str, float, float]] = []  # (stage, time, rss)
    ends: list[float] = []
    peaks: list[float] = []
    epoch_rows: list[dict] = []
    objective, on_epoch_end = model.objective, model.on_epoch_end

    def timed_objective(batch, phase, stage):
        marks.append((stage, time.perf_counter(), rss_mb()))
        return objective(batch, phase, stage)

    def timed_epoch_end(epoch, phase):
        ends.append(time.perf_counter())
        peaks.append(peak_mb())  # before the epoch's evaluation and best-weights copy
        return on_epoch_end(epoch, phase)

    model.objective, model.on_epoch_end = timed_objective, timed_epoch_end
    cfg = TrainConfig(epochs=epochs, batch_size=32, patience=100, progress=False, checkpoint=False, threads=2,
                      precision=precision)
    trainer = Trainer(model, ds, cfg)
    res = trainer.fit()
    model.objective, model.on_epoch_end = objective, on_epoch_end
    epoch_rows = res.history
    stages = []
    for s, _, _ in marks:
        if s in stages:
            break
        stages.append(s)
    first = stages[0]
    starts = [i for i, (s, _, _) in enumerate(marks) if s == first]
    step_times, stage_times = [], {s: [] for s in stages}
    n_first_epoch = len(starts) if epochs == 1 else len(starts) // epochs
    for j, i in enumerate(starts[:n_first_epoch]):
        end = marks[starts[j + 1]][1] if j + 1 < n_first_epoch else ends[0]
        step_times.append(end - marks[i][1])
        for k, s in enumerate(stages):
            s_end = marks[i + k + 1][1] if k + 1 < len(stages) else end
            stage_times[s].append(s_end - marks[i + k][1])
    rss_after = {k: marks[starts[k]][2] for k in (10, 20, 30, 40) if k < n_first_epoch}
    return {"steps": step_times, "stages": stage_times, "rss_after": rss_after,
            "epoch_seconds": [r["seconds"] for r in epoch_rows], "peak_steps_mb": peaks[0]}


class EngineStep:
    """One training step of ``model`` as :class:`~mmib.train.engine.Trainer` runs it (every stage of
    its first phase: requires_grad of that stage only, zero_grad, objective under autocast, backward,
    gradient clipping, Adam step), with optimizers of its own; returns the wall time."""

    def __init__(self, model, precision: str = "fp32") -> None:
        import torch

        from mmib.config import TrainConfig
        from mmib.train.engine import OPTIMIZERS

        self.model, self.precision = model, precision
        self.cfg = TrainConfig(batch_size=32, precision=precision)
        self.phase = model.training_plan(self.cfg)[0]
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.opts = [OPTIMIZERS["adam"]([{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay}
                                         for g in st.groups]) for st in self.phase.stages]
        self.ids = [{id(p) for p in st.parameters()} for st in self.phase.stages]
        self.device = torch.device("cpu")

    def __call__(self, batch) -> float:
        import torch

        from mmib.train.engine import autocast_context

        self.model.train()
        start = time.perf_counter()
        for stage, opt, ids in zip(self.phase.stages, self.opts, self.ids):
            for p in self.trainable:
                p.requires_grad_(id(p) in ids)
            opt.zero_grad(set_to_none=True)
            with autocast_context(self.precision, self.device):
                obj = self.model.objective(batch, self.phase.name, stage.name)
            obj.total.backward()
            clip = stage.clip_grad if stage.clip_grad is not None else self.cfg.clip_grad
            if clip:
                torch.nn.utils.clip_grad_norm_(list(stage.parameters()), clip)
            opt.step()
        elapsed = time.perf_counter() - start
        for p in self.trainable:
            p.requires_grad_(True)
        return elapsed


def build(model_name: str, path: Path, ds, text_options: dict[str, Any], **options: Any):
    import torch

    from mmib.models.registry import build_model

    torch.manual_seed(0)
    return build_model(model_name, ds.spec, text_model=str(path), text_encoder=dict(text_options), **options)


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from mmib.errors import ConfigError
    from mmib.nn.text import HFTextEncoder

    torch.set_num_threads(args.threads)
    print(f"[{name}] pid {os.getpid()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average at start {load()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="mmib-bench-"))
    path = bert_dir(tmp, args.tiny)
    steps = args.steps
    r: dict[str, Any] = {"name": name, "load_start": load()}
    if name in ("text", "text-bf16"):
        ds = make_data(32)
        batch = ds.take(torch.arange(32))
        torch.manual_seed(0)
        enc = HFTextEncoder(path, out_dim=128, random_init=True)
        r["params_m"] = sum(p.numel() for p in enc.parameters()) / 1e6
        if name == "text":
            text_alone_steps(enc, batch, args.warmup)
            t = text_alone_steps(enc, batch, args.text_steps)
            r.update({k: med(v) for k, v in t.items()})
            r["step_all"] = t["step"]
            r["peak_mb"] = peak_mb()
            r["rss_mb"] = rss_mb()
            r["fwd_nograd"] = med(nograd_forward(enc, batch, 3))
        else:
            fp32, bf16 = [], []
            for prec in ("fp32", "bf16"):
                text_alone_steps(enc, batch, 1, prec)
            for _ in range(args.text_steps):
                fp32 += text_alone_steps(enc, batch, 1, "fp32")["step"]
                bf16 += text_alone_steps(enc, batch, 1, "bf16")["step"]
            r.update({"fp32": med(fp32), "bf16": med(bf16), "fp32_all": fp32, "bf16_all": bf16})
        return r

    model_name = "mmim" if name == "mmim" else "c-mib"
    text_options: dict[str, Any] = {"random_init": True}
    epochs, n = 1, 32 * (steps + 1)
    precision = "bf16" if name == "c-mib-bf16" else "fp32"
    if name == "c-mib-bf16":
        n = 32 * (args.bf16_steps + 1)
    if name in ("frozen", "frozen-cache"):
        text_options.update(trainable=False, cache=name == "frozen-cache")
        n, epochs = args.n_train, (2 if name == "frozen-cache" else 1)
    if name == "last2":
        text_options["train_last_k_layers"] = 2
        n = 32 * (args.bf16_steps + 1)
    ds = make_data(n)
    try:
        model = build(model_name, path, ds, text_options)
    except ConfigError as exc:
        if "cache" not in text_options or "cache" not in str(exc):
            raise
        if name == "frozen-cache":
            r["unavailable"] = f"no feature cache in this version ({exc})"
            return r
        text_options.pop("cache")
        r["note"] = "no 'cache' option in this version: run without it"
        model = build(model_name, path, ds, text_options)
    r["trainable_m"] = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    r["layers"] = model.encoders.encoders["text"].backbone.config.num_hidden_layers
    r["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    r["rss_built_mb"] = rss_mb()
    t = run_trainer(model, ds, precision, epochs)
    r["peak_mb"] = peak_mb()
    r["peak_steps_mb"] = t["peak_steps_mb"]
    steady = t["steps"][args.warmup:] or t["steps"]
    r.update({"step": med(steady), "step_all": t["steps"], "rss_after": t["rss_after"],
              "stages": {s: med(v[args.warmup:] or v) for s, v in t["stages"].items()},
              "epoch_seconds": t["epoch_seconds"], "n_train": n})
    if name in ("c-mib", "mmim", "c-mib-bf16"):
        # Paired ratio (peak RSS already read): model steps and text-encoder-alone steps alternate.
        enc = model.encoders.encoders["text"]
        batch = ds.take(torch.arange(32))
        step = EngineStep(model, precision)
        model_t, text_t = [], []
        for i in range(args.paired_steps + 1):  # the first round warms up the new optimizers
            m = step(batch)
            t = text_alone_steps(enc, batch, 1, precision)["step"][0]
            if i:
                model_t.append(m)
                text_t.append(t)
        r.update({"model_paired": med(model_t), "text_paired": med(text_t), "paired_rounds": len(model_t),
                  "model_paired_all": model_t, "text_paired_all": text_t})
    r["load_end"] = load()
    return r


# ---------------------------------------------------------------------- parent
def parse_results(lines: list[str]) -> dict[str, dict[str, Any]]:
    """The children's ``RESULT {json}`` lines, by configuration name (the last one of each wins)."""
    res = {}
    for line in lines:
        if line.startswith(RESULT):
            r = json.loads(line[len(RESULT):])
            r["rss_after"] = {int(k): v for k, v in r.get("rss_after", {}).items()}
            res[r["name"]] = r
    return res


def fmt_s(x: float) -> str:
    return f"{x:.2f} s"


def summary(res: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = []
    t = res.get("text", {})
    a_step, a_peak = t.get("step"), t.get("peak_mb")

    def check(ok: bool) -> str:
        return "meets target" if ok else "MISSES target"

    a_min = min(t["step_all"]) if t.get("step_all") else None

    def fastest(r: dict[str, Any]) -> float:
        return min(r["step_all"][args.warmup:] or r["step_all"])

    lines.append("== (a) text encoder alone (bert-base size, batch 32, length 50)")
    if a_step:
        lines.append(f"   fastest step {fmt_s(a_min)}; median step {fmt_s(a_step)} (forward {fmt_s(t['fwd'])}, backward {fmt_s(t['bwd'])}, "
                     f"Adam {fmt_s(t['adam'])}); forward without autograd {fmt_s(t['fwd_nograd'])}; "
                     f"peak RSS {a_peak / GIB:.2f} GiB; {t['params_m']:.1f} M parameters")
    for name, label, limit in (("c-mib", "C-MIB", 1.10), ("mmim", "MMIM (both stages)", 1.45)):
        r = res.get(name)
        if not r or "step" not in r:
            continue
        lines.append(f"== (b) {label}")
        stages = ", ".join(f"{s} {fmt_s(v)}" for s, v in r["stages"].items())
        during = f" (during the steps {r['peak_steps_mb'] / GIB:.2f} GiB)" if "peak_steps_mb" in r else ""
        lines.append(f"   fastest step {fmt_s(fastest(r))}; median step {fmt_s(r['step'])} ({stages}); "
                     f"peak RSS {r['peak_mb'] / GIB:.2f} GiB{during}")
        ra = r["rss_after"]
        if 10 in ra and args.steps in ra:
            growth = ra[args.steps] / ra[10] - 1
            lines.append(f"   RSS after 10 steps {ra[10] / GIB:.2f} GiB, after {args.steps} steps "
                         f"{ra[args.steps] / GIB:.2f} GiB: {100 * growth:+.1f} % ({check(abs(growth) <= 0.05)}: within 5 %)")
        if a_step:
            ratio, mratio = r["step"] / a_step, r["peak_mb"] / a_peak
            fratio = fastest(r) / a_min
            lines.append(f"== (c) {label} / text alone: fastest steps {fratio:.2f}x ({check(fratio <= limit)}: "
                         f"<= {limit:.2f}x)")
            if "model_paired" in r:
                pratio = r["model_paired"] / r["text_paired"]
                pfast = min(r["model_paired_all"]) / min(r["text_paired_all"])
                paired = (f"paired in-process, fastest {pfast:.2f}x ({check(pfast <= limit)}), median {pratio:.2f}x "
                          f"({check(pratio <= limit)}) ({r['paired_rounds']} alternating rounds: model "
                          f"{', '.join(f'{x:.2f}' for x in r['model_paired_all'])} s; text alone "
                          f"{', '.join(f'{x:.2f}' for x in r['text_paired_all'])} s)")
            else:  # outputs of the first version of this script: text alone timed after the epoch
                paired = (f"same process {r['step'] / r['text_paired']:.2f}x (text alone timed after the epoch: "
                          f"{fmt_s(r['text_paired'])})")
            lines.append(f"   median steps {ratio:.2f}x ({check(ratio <= limit)}); {paired}")
            lines.append(f"   peak RSS {mratio:.3f}x ({check(mratio <= 1.10)}: <= 1.10x)"
                         + (f"; during the steps {r['peak_steps_mb'] / a_peak:.3f}x" if "peak_steps_mb" in r else ""))
            lines.append(f"   (load average at the start of the text-alone run {t.get('load_start')}, of this run "
                         f"{r.get('load_start')}: the cross-process step ratio is only meaningful when they are alike)")
    b = res.get("text-bf16")
    if b and "bf16" in b:
        lines.append(f"== bf16 autocast (CPU): text encoder alone, alternating steps: median fp32 {fmt_s(b['fp32'])}, "
                     f"bf16 {fmt_s(b['bf16'])}: bf16/fp32 {b['bf16'] / b['fp32']:.2f}x; fastest fp32 "
                     f"{fmt_s(min(b['fp32_all']))}, bf16 {fmt_s(min(b['bf16_all']))}: "
                     f"{min(b['bf16_all']) / min(b['fp32_all']):.2f}x")
    cb, c = res.get("c-mib-bf16"), res.get("c-mib")
    if cb and "step" in cb:
        extra = f"; vs fp32 C-MIB {cb['step'] / c['step']:.2f}x" if c and "step" in c else ""
        paired = (f"; paired in-process bf16 C-MIB / bf16 text alone {cb['model_paired'] / cb['text_paired']:.2f}x"
                  if "model_paired" in cb else "")
        lines.append(f"   C-MIB with precision=bf16: step {fmt_s(cb['step'])}, peak RSS {cb['peak_mb'] / GIB:.2f} GiB"
                     f"{extra}{paired}")
    f, fc = res.get("frozen"), res.get("frozen-cache")
    lines.append(f"== frozen text encoder (C-MIB, trainable=false), epoch over {args.n_train} samples")
    if f and "epoch_seconds" in f:
        lines.append(f"   without cache: {f['epoch_seconds'][0]:.1f} s/epoch ({fmt_s(f['step'])}/step), "
                     f"peak RSS {f['peak_mb'] / GIB:.2f} GiB{' [' + f['note'] + ']' if 'note' in f else ''}")
    if fc and "epoch_seconds" in fc:
        e = fc["epoch_seconds"]
        lines.append(f"   with cache: epoch 1 (fills it) {e[0]:.1f} s, epoch 2 (reads it) {e[1]:.2f} s; "
                     f"peak RSS {fc['peak_mb'] / GIB:.2f} GiB")
        if f and "epoch_seconds" in f:
            lines.append(f"   cached epoch / uncached epoch: {e[1] / f['epoch_seconds'][0]:.3f}x")
    elif fc:
        lines.append(f"   with cache: unavailable ({fc.get('unavailable')})")
    l2 = res.get("last2")
    if l2 and "step" in l2:
        lines.append(f"== last 2 of {l2.get('layers', '?')} layers trained (C-MIB): step {fmt_s(l2['step'])}, peak RSS {l2['peak_mb'] / GIB:.2f} GiB, "
                     f"{l2['trainable_m']:.1f} M trainable parameters")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=CONFIGS, help="run one configuration in this process (what the parent spawns)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations to run")
    p.add_argument("--steps", type=int, default=40, help="model steps measured (RSS after 10 and after this many)")
    p.add_argument("--text-steps", type=int, default=8, help="timed steps of the text encoder alone")
    p.add_argument("--paired-steps", type=int, default=4, help="alternating rounds for the paired ratio")
    p.add_argument("--bf16-steps", type=int, default=10, help="steps of c-mib-bf16 and last2")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of medians")
    p.add_argument("--n-train", type=int, default=1284, help="training samples of the frozen-encoder epochs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide BERT (checks the script; figures meaningless)")
    p.add_argument("--summarize", metavar="FILE", help="print the summary of the RESULT lines of a saved output")
    args = p.parse_args()
    if args.only:
        r = child(args.only, args)
        print(RESULT + json.dumps(r), flush=True)
        return
    if args.summarize:
        res = parse_results(Path(args.summarize).read_text().splitlines())
        print("\n".join(["== Summary of the RESULT lines in %s (medians of steps after the first %d; wall clock)"
                         % (args.summarize, args.warmup), *summary(res, args)]))
        return
    import platform

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--short", "--", "src/mmib/train/engine.py", "src/mmib/nn",
                            "src/mmib/models/mib.py", "src/mmib/models/mmim.py", "src/mmib/models/common.py"],
                           capture_output=True, text=True).stdout.split("\n")
    print(f"text_encoder_cost: {time.strftime('%Y-%m-%d %H:%M:%S')}, git {rev}"
          f"{' (uncommitted: ' + ', '.join(x[3:] for x in dirty if x) + ')' if any(dirty) else ''}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
          f"load average {load()}", flush=True)
    res: dict[str, dict[str, Any]] = {}
    passthrough = ["--steps", str(args.steps), "--text-steps", str(args.text_steps), "--paired-steps",
                   str(args.paired_steps), "--bf16-steps", str(args.bf16_steps), "--warmup", str(args.warmup),
                   "--n-train", str(args.n_train), "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
    for name in [c for c in args.configs.split(",") if c]:
        if name not in CONFIGS:
            p.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--only", name, *passthrough], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            print(line, flush=True)
        res.update(parse_results(proc.stdout.splitlines()))
        if proc.returncode:
            print(f"[{name}] FAILED (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
        print(f"[{name}] {time.perf_counter() - start:.0f} s wall, load average {load()}", flush=True)
    print("\n".join(["", "== Summary (medians of steps after the first %d; wall clock)" % args.warmup,
                     *summary(res, args)]), flush=True)
    print(f"load average at the end {load()}", flush=True)


if __name__ == "__main__":
    main()
