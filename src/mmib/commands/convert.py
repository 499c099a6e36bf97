"""``mmib convert RUN_DIR ...``: rewrite old-format runs (pickled ``model.pt``/``checkpoint.pt``) as safetensors.

This is the one place mmib unpickles a run file, and it runs only when asked:
unpickling executes any code the file holds, so convert only runs you trust
(ones you trained yourself with an older mmib, or from a source you trust).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COMMAND = "convert"
HELP = "convert old-format runs (pickled model.pt/checkpoint.pt) to the safe format; unpickles them: trusted runs only"
DESCRIPTION = (
    "Rewrite runs written by older mmib versions, whose model.pt and checkpoint.pt are pickles, as "
    "model.safetensors and checkpoint.safetensors (weights as tensors, everything else as JSON), which mmib reads "
    "without running any code. Converting UNPICKLES the old files, which runs any code they hold: convert only "
    "runs you trust. Each given folder is a run directory or a folder holding runs (e.g. a compare or sweep "
    "directory); every old-format run below it is converted, each new file written atomically before the old "
    "ones are removed (an interrupted conversion can be run again)."
)
ORDER = 37


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding runs")


def _old_runs(folder: Path) -> list[Path]:
    from mmib.train import rundir

    found = {f.parent for name in rundir.LEGACY_FILES for f in folder.rglob(name)}
    if rundir.legacy_files(folder):
        found.add(folder)
    return sorted(found)


def run(args: argparse.Namespace) -> int:
    from mmib.config import load_config
    from mmib.errors import RunError
    from mmib.train import rundir

    runs: list[Path] = []
    for given in args.paths:
        folder = Path(given)
        if not folder.is_dir():
            raise RunError(f"{folder}: no such folder")
        found = _old_runs(folder)
        if not found:
            raise RunError(f"{folder}: no old-format run (no {' or '.join(rundir.LEGACY_FILES)}) in it or below it")
        runs.extend(r for r in found if r not in runs)
    for run_dir in runs:
        config = load_config(run_dir / rundir.CONFIG).to_dict() if (run_dir / rundir.CONFIG).is_file() else None
        names = ", ".join(f.name for f in rundir.legacy_files(run_dir))
        print(f"unpickling {run_dir}/{{{names}}} (this runs any code they hold)", file=sys.stderr)
        done = rundir.convert_legacy_run(run_dir, config)
        print(f"converted {run_dir}: {'; '.join(done)}")
    return 0
