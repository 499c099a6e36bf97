"""Study throughput: the same small study trained three ways, in runs per hour and CPU seconds per run.

Ways (``--ways``, each in its own process tree, one after the other):

* ``separate``: one ``mmib train`` process per run, ``--jobs`` processes at a time (a shell loop);
* ``compare``: ``mmib compare --jobs J`` per dataset, every run on its own (``--separately``
  where the installed mmib has it: on code before ensembles this is plain ``mmib compare``);
* ``together``: ``mmib compare --jobs J`` per dataset with its default, a model's seeds trained
  together as one vectorised ensemble per process where the model supports it.

Only the command line is used for these, so the script also measures older code: on a checkout
without ensembles run it with ``--ways separate,compare`` for the "before" figures. CPU seconds
are those of the whole process tree (every descendant's utime + stime, sampled from /proc every
50 ms; a process that ends between two samples loses at most that much), runs per hour are
runs / wall time.

``--inprocess``: the ensemble target in one warm process: for each model, one seed trained alone
(``mmib.api.train``) against K seeds trained together (``mmib.api.train_together``), rounds
alternating so that drifting machine load hits both alike, a fixed number of epochs (no early
stop: equal work per run), ``--ks`` the K to try. With ``--device cuda`` the same on the GPU
(K = 1, 5, 20 by default); without CUDA it says so and exits 0. ``--compare-jobs J``: also the
K seeds through ``mmib compare``'s own executor with J processes
(:func:`mmib.experiments.compare.execute`: a fresh pool of forked workers per call, as the
command makes one, the seeds split into ensembles across them), i.e. ``mmib compare --jobs J``
without the interpreter's start-up and PyTorch's import.

Examples (reduced; the full study is the default)::

    python benchmarks/study_throughput.py --models concat,e-mib --data sim-msa --seeds 2 --epochs 3
    python benchmarks/study_throughput.py --inprocess --models concat,e-mib,c-mib --ks 5 --epochs 10
    python benchmarks/study_throughput.py --inprocess --device cuda --ks 1,5,20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STUDY_MODELS = "concat,e-mib,c-mib,mmim"
STUDY_DATA = "sim-msa,sim-i"
WAYS = ("separate", "compare", "together")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ----------------------------------------------------------------------------- process-tree CPU
class TreeCPU:
    """CPU seconds (user + system) of every descendant of this process while it is running, from
    /proc/<pid>/stat sampled every ``interval`` s (the last value seen of each process counts)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.seen: dict[tuple[int, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _stats() -> dict[int, tuple[int, str, float]]:
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = text.rsplit(")", 1)[1].split()
            # fields[1]: ppid, [11]/[12]: utime/stime in clock ticks, [19]: start time
            out[int(entry)] = (int(fields[1]), fields[19], (int(fields[11]) + int(fields[12])) / CLK_TCK)
        return out

    def _sample(self) -> None:
        stats = self._stats()
        tree = {os.getpid()}
        grown = True
        while grown:
            grown = False
            for pid, (ppid, _, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grown = True
        for pid in tree - {os.getpid()}:
            _, start, cpu = stats[pid]
            self.seen[(pid, start)] = cpu

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


# ----------------------------------------------------------------------------- the study, three ways
def parse_data(text: str) -> list[tuple[str, list[str]]]:
    """``sim-msa,sim-i:n_samples=3000`` -> ``[("sim-msa", []), ("sim-i", ["data.n_samples=3000"])]``."""
    out = []
    for item in text.split(","):
        name, _, opts = item.partition(":")
        out.append((name, [f"data.{o}" for o in opts.split(";") if o]))
    return out


def compare_flags(python: str, env: dict[str, str]) -> set[str]:
    """Which of ``--separately`` (ensembles exist) and ``--no-reference`` (compare adds the linear
    reference model unless told not to) the installed ``mmib compare`` knows."""
    help_text = subprocess.run([python, "-m", "mmib", "compare", "--help"], capture_output=True, text=True, env=env).stdout
    return {f for f in ("--separately", "--no-reference") if f in help_text}


def run_commands(commands: list[list[str]], jobs: int, env: dict[str, str], log: Path) -> list[int]:
    """Run ``commands`` ``jobs`` at a time; their output goes to ``log``; returns the exit codes."""
    codes: list[int] = []
    with log.open("a") as out:
        running: list[subprocess.Popen] = []
        queue = list(commands)
        while queue or running:
            while queue and len(running) < jobs:
                cmd = queue.pop(0)
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                running.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))
            for p in list(running):
                if p.poll() is not None:
                    codes.append(p.returncode)
                    running.remove(p)
            time.sleep(0.02)
    return codes


def study_way(way: str, args: argparse.Namespace, env: dict[str, str], root: Path, flags: set[str]) -> dict:
    """Train the study one way; wall s, tree CPU s, runs finished."""
    out = root / way
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    models = args.models.split(",")
    common = [f"--set={s}" for s in args.set] + ["--set=progress=false"]
    commands = []
    for data, data_sets in parse_data(args.data):
        sets = common + [f"--set={s}" for s in data_sets]
        if way == "separate":
            for model in models:
                for seed in range(args.seeds):
                    commands.append([args.python, "-m", "mmib", "train", "-m", model, "-d", data, "--seed", str(seed),
                                     "--epochs", str(args.epochs), "-q", "--device", args.run_device,
                                     "--out", str(out / data / model / f"seed{seed}"), *sets])
        else:
            commands.append([args.python, "-m", "mmib", "compare", "-m", args.models, "-d", data, "--seeds",
                             str(args.seeds), "--jobs", str(args.jobs), "--epochs", str(args.epochs), "--device",
                             args.run_device, "--out", str(out / data), *sets,
                             *(["--separately"] if way == "compare" and "--separately" in flags else []),
                             *(["--no-reference"] if "--no-reference" in flags else [])])
    start = time.perf_counter()
    with TreeCPU() as cpu:
        codes = run_commands(commands, args.jobs if way == "separate" else 1, env, out / "log.txt")
    wall = time.perf_counter() - start
    results = sorted(r for m in models for r in out.glob(f"*/{m}/seed*/results.json"))
    train_s = [float(json.loads(r.read_text()).get("train_seconds") or 0.0) for r in results]
    return {"way": way, "wall": wall, "cpu": cpu.seconds, "runs": len(results), "failed_cmds": sum(c != 0 for c in codes),
            "train_s": statistics.mean(train_s) if train_s else float("nan")}


def print_study(rows: list[dict], planned: int) -> None:
    base = next((r for r in rows if r["way"] == "separate"), rows[0])
    print(f"\n| way | runs | wall s | runs/hour | CPU s/run | train wall s/run (results.json) | wall vs {base['way']} "
          f"| CPU/run vs {base['way']} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_hour = 3600 * r["runs"] / r["wall"] if r["wall"] else float("nan")
        cpu_run = r["cpu"] / max(r["runs"], 1)
        base_cpu = base["cpu"] / max(base["runs"], 1)
        print(f"| {r['way']} | {r['runs']}/{planned} | {r['wall']:.1f} | {per_hour:.0f} | {cpu_run:.2f} | "
              f"{r['train_s']:.2f} | {base['wall'] / r['wall']:.2f}x faster | {base_cpu / cpu_run:.2f}x less |")
    for r in rows:
        if r["failed_cmds"] or r["runs"] < planned:
            print(f"note: {r['way']}: {r['failed_cmds']} command(s) failed, {r['runs']} of {planned} runs finished "
                  f"(see its log.txt)")


# ----------------------------------------------------------------------------- in one process: K together
def inprocess(args: argparse.Namespace) -> int:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA: not available on this machine (torch.cuda.is_available() is False); "
              f"the K = {args.ks} figures need a GPU. Nothing measured.")
        return 0
    torch.set_num_threads(args.threads)
    from mmib.api import make_config, train, train_together
    from mmib.experiments.compare import PlannedRun, execute

    ks = [int(k) for k in args.ks.split(",")]
    data, data_sets = parse_data(args.data)[0]
    print(f"in-process, {args.device}, {args.threads} torch thread(s), {data}, {args.epochs} epochs per run "
          f"(no early stop), {args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="mmib-throughput-"))
    for model in args.models.split(","):
        def cfg(seed: int, epochs: int = args.epochs):
            return make_config(model, data, overrides=[*data_sets, *args.set, f"train.seed={seed}"], progress=False,
                               epochs=epochs, patience=epochs + 1, device=args.device)

        configs = [cfg(s) for s in range(max(ks))]
        train(config=configs[0], epochs=1)  # warm-up: imports, first optimizer, allocator
        if args.compare_jobs:  # warm-up: the fork server (it imports PyTorch once per process that uses it)
            execute([PlannedRun(model, i, tmp / "warm" / model / str(i), cfg(i, 1)) for i in range(args.compare_jobs)],
                    jobs=args.compare_jobs, log=None)
        alone_w, alone_c = [], []
        together: dict[int, tuple[list[float], list[float]]] = {k: ([], []) for k in ks}
        through_compare: dict[int, list[float]] = {k: [] for k in ks}
        notes: list[str] = []
        for rnd in range(args.rounds):
            w, c = time.perf_counter(), time.process_time()
            train(config=configs[0], out=tmp / "alone")
            sync(args.device)
            alone_w.append(time.perf_counter() - w)
            alone_c.append(time.process_time() - c)
            for k in ks:
                w, c = time.perf_counter(), time.process_time()
                res = train_together(configs[:k], [tmp / f"m{i}" for i in range(k)], log=notes.append)
                sync(args.device)
                together[k][0].append(time.perf_counter() - w)
                together[k][1].append(time.process_time() - c)
                bad = [r for r in res if isinstance(r, Exception)]
                if bad:
                    print(f"{model} K={k}: {len(bad)} run(s) failed: {bad[0]}")
                if args.compare_jobs:
                    runs = [PlannedRun(model, i, tmp / f"c-{model}-{rnd}-{k}" / str(i), configs[i]) for i in range(k)]
                    w = time.perf_counter()
                    failures = execute(runs, jobs=args.compare_jobs, log=None)
                    through_compare[k].append(time.perf_counter() - w)
                    if failures:
                        print(f"{model} K={k} through compare: {len(failures)} run(s) failed: {failures[0]['error']}")
        how = "together" if any("together" in n for n in notes) else "one at a time (" + notes[-1] + ")"
        t1w, t1c = statistics.median(alone_w), statistics.median(alone_c)
        for k in ks:
            tw, tc = statistics.median(together[k][0]), statistics.median(together[k][1])
            tj = statistics.median(through_compare[k]) if through_compare[k] else None
            rows.append((model, k, t1w, t1c, tw, tc, how if k > 1 else "-", tj))
    shutil.rmtree(tmp, ignore_errors=True)
    jobs_head = f" K seeds through compare, {args.compare_jobs} processes: wall s | vs one seed |" if args.compare_jobs else ""
    print(f"\n| model | K | one seed alone: wall s | CPU s | K seeds: wall s | CPU s | wall vs one seed | "
          f"runs per wall-second vs alone | how |{jobs_head}")
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if args.compare_jobs else ""))
    for model, k, t1w, t1c, tw, tc, how, tj in rows:
        jobs_cells = f" {tj:.2f} | {tj / t1w:.2f}x |" if tj is not None else ""
        print(f"| {model} | {k} | {t1w:.2f} | {t1c:.2f} | {tw:.2f} | {tc:.2f} | {tw / t1w:.2f}x | "
              f"{k * t1w / tw:.2f}x | {how} |{jobs_cells}")
    if 5 in ks and args.device == "cpu":
        for model, k, t1w, _, tw, _, _, tj in rows:
            if k == 5:
                verdict = "met" if tw <= 2 * t1w else "not met"
                jobs = (f"; through compare with {args.compare_jobs} processes {tj / t1w:.2f}x "
                        f"({'met' if tj <= 2 * t1w else 'not met'})" if tj is not None else "")
                print(f"target '5 seeds in at most 2x the wall time of one seed', {model}: {tw / t1w:.2f}x ({verdict})"
                      f" in one process{jobs}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- entry point
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=STUDY_MODELS, help=f"comma-separated models (default {STUDY_MODELS})")
    ap.add_argument("--data", default=STUDY_DATA,
                    help=f"datasets with options, e.g. 'sim-msa,sim-i:n_samples=3000' (default {STUDY_DATA})")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds per model and dataset (default 5)")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30, the training default)")
    ap.add_argument("--jobs", type=int, default=2, help="processes at a time (default 2)")
    ap.add_argument("--ways", default=",".join(WAYS), help=f"ways to train the study (default {','.join(WAYS)})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="--set for every run")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs `-m mmib` (default this one)")
    ap.add_argument("--out", help="where the study's runs go (default a temporary directory, removed)")
    ap.add_argument("--inprocess", action="store_true", help="one warm process: one seed alone vs K together")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="device of --inprocess runs (cuda: K = 1, 5, 20 unless --ks)")
    ap.add_argument("--ks", help="K seeds together for --inprocess (default 5 on cpu, 1,5,20 on cuda)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of --inprocess (default 3)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of --inprocess (default 1)")
    ap.add_argument("--compare-jobs", type=int, default=0, metavar="J",
                    help="--inprocess: also the K seeds through mmib compare's executor with J processes (default: no)")
    args = ap.parse_args()
    if args.compare_jobs < 0:
        ap.error(f"--compare-jobs: {args.compare_jobs} is not a number of processes (0 = not measured, or 1 or more)")
    if args.inprocess or args.device == "cuda":
        args.ks = args.ks or ("1,5,20" if args.device == "cuda" else "5")
        return inprocess(args)
    args.run_device = "cpu"
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    ways = [w for w in args.ways.split(",") if w]
    unknown = set(ways) - set(WAYS)
    if unknown:
        ap.error(f"--ways: unknown {', '.join(sorted(unknown))}; choose from {', '.join(WAYS)}")
    flags = compare_flags(args.python, env)
    if "together" in ways and "--separately" not in flags:
        print("note: this mmib has no ensembles (`mmib compare --separately` is unknown): 'together' equals 'compare'")
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="mmib-study-"))
    planned = len(args.models.split(",")) * len(parse_data(args.data)) * args.seeds
    print(f"study: {args.models} on {args.data}, {args.seeds} seeds, {args.epochs} epochs = {planned} runs per way; "
          f"{args.jobs} processes; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    for way in ways:
        row = study_way(way, args, env, root, flags)
        print(f"{way}: {row['runs']} runs in {row['wall']:.1f} s wall, {row['cpu']:.1f} CPU s", flush=True)
        rows.append(row)
    print_study(rows, planned)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
