#!/usr/bin/env bash
# Produces the committed example report docs/example_report/ on the synthetic sim-msa set with the
# experiment commands: `mmib compare` (every registered model x 3 seeds), `mmib sweep` (C-MIB's beta,
# a grid over the decades of MIB Table IX), `mmib report` and `mmib robust`.
#
#   bash scripts/example_report.sh        # from the repository root, after `make setup`
#
# One torch thread, one process: about 15 minutes on an idle 2-core machine. Runs are written under
# $RUNS (default runs/example, not committed); rerunning skips finished runs and trials.
set -euo pipefail
cd "$(dirname "$0")/.."
MMIB=${MMIB:-.venv/bin/mmib}
RUNS=${RUNS:-runs/example}
OUT=${OUT:-docs/example_report}
MODELS=${MODELS:-$($MMIB models | awk '{print $1}' | paste -sd, -)}
EPOCHS=${EPOCHS:-20}

status=0
$MMIB compare -m "$MODELS" -d sim-msa --seeds 3 --epochs "$EPOCHS" --set threads=1 --out "$RUNS/compare" || status=$?
$MMIB sweep -m c-mib -d sim-msa --param beta=choice:0,1e-6,1e-5,1e-4,1e-3,1e-2,1e-1,1 --sampler grid \
    --pruner none --epochs "$EPOCHS" --set threads=1 --out "$RUNS/sweep-beta"
rm -rf "$OUT"
$MMIB report "$RUNS/compare" "$RUNS/sweep-beta" -o "$OUT" --tsne-samples 600 \
    --title "Example report: every registered model on sim-msa"
$MMIB robust "$RUNS/compare/c-mib/seed0" -o "$OUT/robust"
cp "$RUNS/compare/compare.csv" "$RUNS/compare/compare.tex" "$RUNS/compare/runs.csv" "$OUT/"
cp "$RUNS/sweep-beta/trials.csv" "$OUT/sweep_trials.csv"
echo "example report written to $OUT (compare exit status $status)"
exit "$status"
