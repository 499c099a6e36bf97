"""Check that each synthetic set has the gap it was built for: oracle vs linear vs a small MLP.

For every set and data seed, on the test split:

* ``oracle``: ``meta["oracle"]`` (the Bayes-optimal prediction, see ``mmib.data.oracle``);
* ``linear``: ridge regression (regression) or L2 logistic regression (binary) on the
  standardised, masked-mean-pooled features of the named modalities, penalty chosen
  on the validation split from a log grid (what issue 12's ``linear`` reference fits);
* ``mlp``: a small MLP on the same features (two hidden layers of 64, ReLU, dropout
  0.1, AdamW lr 1e-3, weight decay 1e-4, batch 128, L1 loss for regression and cross
  entropy otherwise, at most 300 epochs, early stopping on the validation metric with
  patience 15, the best epoch restored; one thread, seeded);
* set-specific rows: the same learners on one modality, the oracle told the
  corruption pattern, logistic regression on the cross-modal products, ...

Regression reports MAE (lower is better) and Pearson's r, classification accuracy.

Run: ``python benchmarks/claims_check.py`` (all sets, data seeds 0-2; about 15 minutes
on one core) or ``--sets claim-corrupt --seeds 0``; ``--doc docs/results/claims_data.md``
writes the tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmib.data import load_dataset
from mmib.data.dataset import MultimodalDataset
from mmib.eval.metrics import compute_metrics


# ---------------------------------------------------------------------- features and learners
def pooled(ds: MultimodalDataset, modalities: list[str] | None = None) -> np.ndarray:
    """Masked mean over valid steps for sequences, the vector itself otherwise; concatenated."""
    out = []
    for m in modalities or list(ds.features):
        x = ds.features[m]
        if x.dim() == 3:
            x = x.sum(1) / ds.lengths[m].clamp_min(1).unsqueeze(1).float()
        out.append(x)
    return torch.cat(out, 1).numpy().astype(np.float64)


def products(ds: MultimodalDataset, a: str, b: str) -> np.ndarray:
    """All pairwise products of two vector modalities (what tensor fusion makes available)."""
    x, z = ds.features[a].double(), ds.features[b].double()
    return (x.unsqueeze(2) * z.unsqueeze(1)).reshape(len(ds), -1).numpy()


def gated(ds: MultimodalDataset) -> np.ndarray:
    """Each modality, its copy times a crude corruption flag and the flag (the squared norm above
    the geometric mean of the typical clean and the typical corrupted norm, read off the training
    quantiles with the known rate): the per-sample weighting a linear model can then learn,
    without per-sample ground truth."""
    tr = ds.splits["train"]
    cols = []
    for i, m in enumerate(ds.features):
        x = ds.features[m].double()
        sq = x.pow(2).sum(1)
        rate = ds.meta["corrupt_rates"][i]
        low, high = torch.quantile(sq[tr], torch.tensor([(1.0 - rate) / 2, 1.0 - rate / 2], dtype=sq.dtype))
        threshold = (low * high).sqrt()  # between the typical clean and the typical corrupted norm
        flag = (sq > threshold).double().unsqueeze(1)
        cols += [x, x * flag, flag]
    return torch.cat(cols, 1).numpy()


def _split(ds):
    return tuple(ds.splits[s].numpy() for s in ("train", "valid", "test"))


def score(ds: MultimodalDataset, pred, idx) -> dict[str, float]:
    m = compute_metrics(ds.task, pred, ds.y[torch.as_tensor(idx)])
    if ds.task.kind == "regression":
        return {"mae": m["mae"], "corr": m["corr"]}
    return {"accuracy": m["accuracy"]}


def linear(ds: MultimodalDataset, x: np.ndarray) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    tr, va, te = _split(ds)
    x = StandardScaler().fit(x[tr]).transform(x)
    y = ds.y.numpy()
    if ds.task.kind == "regression":
        fits = [Ridge(alpha=a).fit(x[tr], y[tr]) for a in np.logspace(-3, 5, 17)]
        best = min(fits, key=lambda f: float(np.abs(f.predict(x[va]) - y[va]).mean()))
        return score(ds, best.predict(x[te]), te)
    fits = [LogisticRegression(C=c, max_iter=3000).fit(x[tr], y[tr]) for c in np.logspace(-3, 1, 5)]
    best = max(fits, key=lambda f: f.score(x[va], y[va]))
    return score(ds, best.decision_function(x[te])[:, None] * np.array([[-0.5, 0.5]]), te)


def mlp(ds: MultimodalDataset, x: np.ndarray, seed: int, hidden: int = 64, dropout: float = 0.1,
        lr: float = 1e-3, weight_decay: float = 1e-4, batch: int = 128, epochs: int = 300,
        patience: int = 15) -> dict[str, float]:
    tr, va, te = _split(ds)
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
    xt = torch.as_tensor((x - mu) / sd, dtype=torch.float32)
    regression = ds.task.kind == "regression"
    y = ds.y.float() if regression else ds.y
    out = 1 if regression else int(ds.task.num_classes)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(xt.shape[1], hidden), nn.ReLU(), nn.Dropout(dropout),
                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))
    loss_fn: Callable = nn.L1Loss() if regression else nn.CrossEntropyLoss()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    tr_t, va_t = torch.as_tensor(tr), torch.as_tensor(va)

    def predict(idx):
        net.eval()
        with torch.no_grad():
            p = net(xt[idx])
        net.train()
        return p[:, 0] if regression else p

    def valid_score() -> float:
        p = predict(va_t)
        return -float((p - y[va_t]).abs().mean()) if regression else float((p.argmax(1) == y[va_t]).float().mean())

    best, state, bad = -np.inf, None, 0
    for _ in range(epochs):
        perm = tr_t[torch.randperm(tr_t.numel(), generator=g)]
        for s in range(0, perm.numel(), batch):
            b = perm[s : s + batch]
            p = net(xt[b])
            loss = loss_fn(p[:, 0] if regression else p, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = valid_score()
        if v > best:
            best, state, bad = v, {k: t.clone() for k, t in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= patience:
                break
    net.load_state_dict(state)
    return score(ds, predict(torch.as_tensor(te)).numpy(), te)


# ---------------------------------------------------------------------- what each set is checked with
def rows_for(name: str, ds: MultimodalDataset, seed: int) -> dict[str, dict[str, float]]:
    tr, va, te = _split(ds)
    out = {"oracle": score(ds, ds.meta["oracle"][te], te)}
    union = pooled(ds)
    out["linear, all modalities"] = linear(ds, union)
    out["MLP, all modalities"] = mlp(ds, union, seed)
    if name == "claim-corrupt":
        out["linear on [x_m, x_m * flag_m, flag_m], flag_m: |x_m|^2 looks corrupted"] = linear(ds, gated(ds))
        out["oracle told the corruption pattern"] = score(ds, ds.meta["oracle_known_pattern"][te], te)
        out["population least-squares linear predictor"] = score(ds, ds.meta["linear_oracle"][te], te)
        out["MLP, x1 only"] = mlp(ds, pooled(ds, ["x1"]), seed)
    elif name == "claim-spurious":
        clean = load_dataset(name, seed=seed, spurious=0.0)  # the same data, u unlinked from y in train too
        out["linear, all modalities, trained without the spurious link"] = linear(clean, pooled(clean))
        out["MLP, all modalities, trained without the spurious link"] = mlp(clean, pooled(clean), seed)
        out["linear, x1 only (no spurious factor)"] = linear(ds, pooled(ds, ["x1"]))
        out["MLP, x1 only (no spurious factor)"] = mlp(ds, pooled(ds, ["x1"]), seed)
        train_acc = float(((ds.meta["oracle"][tr].argmax(1)) == ds.y[tr]).float().mean())
        out["oracle on the training rows"] = {"accuracy": train_acc}
    elif name == "claim-interaction":
        out["MLP, x1 only"] = mlp(ds, pooled(ds, ["x1"]), seed)
        out["linear on x1 (x) x2 products"] = linear(ds, products(ds, "x1", "x2"))
    elif name == "claim-shared":
        out["linear, text only"] = linear(ds, pooled(ds, ["text"]))
        out["MLP, text only"] = mlp(ds, pooled(ds, ["text"]), seed)
    elif name == "claim-entangled":
        out["MLP, x1 only"] = mlp(ds, pooled(ds, ["x1"]), seed)
    elif name.startswith("sim"):
        if "subset_optimum" in ds.meta:
            out["closed-form optimum from x1"] = {"accuracy": ds.meta["subset_optimum"]["x1"]}
    return out


SETS: dict[str, dict] = {
    "claim-corrupt": {},
    "claim-spurious": {},
    "claim-entangled": {},
    "claim-interaction": {},
    "claim-shared": {},
    "sim-msa-small": {},
    "sim-msa": {},
    "sim-i": {},
    "sim-n:1000": {"name": "sim-n", "n_train": 1000},
    "sim-n:10000": {"name": "sim-n", "n_train": 10000},
    "sim-n:30000": {"name": "sim-n", "n_train": 30000},
}


def run(key: str, seed: int) -> dict:
    options = dict(SETS[key])
    name = options.pop("name", key)
    t0 = time.time()
    ds = load_dataset(name, seed=seed, **options)
    rows = rows_for(name, ds, seed)
    return {"set": key, "seed": seed, "rows": rows, "seconds": round(time.time() - t0, 1), "summary": ds.summary()}


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(results: list[dict]) -> str:
    lines = ["# Synthetic sets: the optimum beside a linear model and a small MLP", "",
             "Generated by `benchmarks/claims_check.py` (its docstring defines every learner). Test split; "
             "mean ± std over data seeds; the seed sets the data and the MLP's initialisation.", ""]
    by_set: dict[str, list[dict]] = {}
    for r in sorted(results, key=lambda r: (list(SETS).index(r["set"]) if r["set"] in SETS else len(SETS), r["seed"])):
        by_set.setdefault(r["set"], []).append(r)
    for key, runs in by_set.items():
        seeds = sorted(r["seed"] for r in runs)
        metrics = list(runs[0]["rows"]["oracle"])
        lines += [f"## {key}", "", f"`{runs[0]['summary']}`; data seeds {', '.join(map(str, seeds))}; "
                  f"{statistics.mean(r['seconds'] for r in runs):.0f} s per seed for all rows.", "",
                  "| predictor | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for row in runs[0]["rows"]:
            cells = [fmt([r["rows"][row][m] for r in runs if row in r["rows"]]) for m in metrics]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated keys of SETS")
    parser.add_argument("--seeds", default="0,1,2", help="data seeds")
    parser.add_argument("--results", default="docs/results/claims_data.jsonl", help="JSON lines, one per set and seed")
    parser.add_argument("--doc", default=None, help="write the markdown tables here")
    parser.add_argument("--report-only", action="store_true", help="rewrite --doc from --results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = Path(args.results)
    results = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.report_only:
        done = {(r["set"], r["seed"]) for r in results}
        for key in args.sets.split(","):
            if key not in SETS:
                sys.exit(f"unknown set {key!r}; choose from {', '.join(SETS)}")
            for seed in (int(s) for s in args.seeds.split(",")):
                if (key, seed) in done:
                    continue
                res = run(key, seed)
                results.append(res)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as f:
                    f.write(json.dumps(res) + "\n")
                print(key, seed, json.dumps(res["rows"]), f"{res['seconds']} s", flush=True)
    if args.doc:
        Path(args.doc).write_text(report(results) + "\n")


if __name__ == "__main__":
    main()
