"""The Python API, mirroring the CLI: load data, build, train, evaluate, reload runs.

>>> from mmib import load_dataset, build_model, train, evaluate, load_run
>>> result = train(model="concat", data="sim-i", out="runs/demo", epochs=5, data_options={"n_samples": 2000})
>>> run = load_run("runs/demo"); evaluate(run, split="test")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmib.config import (
    DataConfig, ModelConfig, RunConfig, TrainConfig, apply_overrides, apply_training_defaults, changed_train_keys,
    load_config, override_train_keys,
)
from mmib.data.dataset import Batch, DatasetSpec, MultimodalDataset, Standardizer
from mmib.data.registry import load_dataset
from mmib.errors import DataError, RunError
from mmib.models.base import MultimodalModel
from mmib.models.registry import build_model, get_model
from mmib.models.registry import model_options as model_option_values
from mmib.train import rundir
from mmib.train.engine import FitResult, Predictions, Trainer, seed_everything
from mmib.train.engine import evaluate as _evaluate
from mmib.train.engine import predict as _predict


def dataset_from_config(cfg: DataConfig) -> MultimodalDataset:
    """Load the dataset a :class:`DataConfig` describes."""
    return load_dataset(
        cfg.name, cfg.path, seed=cfg.seed, standardize=cfg.standardize, replace_nonfinite=cfg.replace_nonfinite,
        **cfg.options,
    )


def make_config(
    model: str | None = None,
    data: str | None = None,
    config: RunConfig | str | Path | None = None,
    data_path: str | None = None,
    data_options: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    **train_options: Any,
) -> RunConfig:
    """Assemble a :class:`RunConfig` from a base config, names, options and ``key=value`` overrides.

    The model's declared training defaults (``MultimodalModel.training_defaults``, e.g. MCER's
    batch size 32) fill every training option the caller did not set: not in the YAML file's
    ``train`` section, not a keyword argument, not an override, and (for a ``RunConfig`` given
    as ``config`` together with a ``model`` name) still at :class:`TrainConfig`'s default. A
    ``RunConfig`` given without a ``model`` name is taken as complete: it gets no defaults again
    (it may be one this function made, whose ``weight_decay=0`` the user chose).
    """
    if isinstance(config, (str, Path)):
        cfg = load_config(config)
        explicit = _yaml_train_keys(config)
    else:
        cfg = config or RunConfig()
        explicit = changed_train_keys(cfg.train)
    explicit |= set(train_options) | override_train_keys(overrides or [])
    cfg = dataclasses.replace(cfg)
    if model is not None:
        cfg.model = ModelConfig(model, {**(cfg.model.options if cfg.model.name == model else {}), **(model_options or {})})
    elif model_options:
        cfg.model = ModelConfig(cfg.model.name, {**cfg.model.options, **model_options})
    if data is not None:
        cfg.data = dataclasses.replace(cfg.data, name=data, options=dict(data_options or {}) if data != cfg.data.name else {**cfg.data.options, **(data_options or {})})
    elif data_options:
        cfg.data = dataclasses.replace(cfg.data, options={**cfg.data.options, **data_options})
    if data_path is not None:
        cfg.data = dataclasses.replace(cfg.data, path=str(data_path))
    sets = [f"train.{k}={_yaml_value(v)}" for k, v in train_options.items()]
    cfg = apply_overrides(cfg, sets + list(overrides or []))
    if cfg.model.name:  # an unknown model or option fails here, before any data is loaded or generated
        model_option_values(cfg.model.name, cfg.model.options)
        defaults = get_model(cfg.model.name).cls.training_defaults
        if defaults and (model is not None or not isinstance(config, RunConfig)):
            cfg = apply_training_defaults(cfg, defaults, explicit, f"model {cfg.model.name}")
    return cfg


def _yaml_train_keys(path: str | Path) -> set[str]:
    """The keys of a YAML run config's ``train`` section (the file was validated by ``load_config``)."""
    import yaml

    d = yaml.safe_load(Path(path).read_text()) or {}
    train = d.get("train") if isinstance(d, dict) else None
    return set(train) if isinstance(train, dict) else set()


def _yaml_value(v: Any) -> str:
    import yaml

    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def train(
    model: str | None = None,
    data: str | None = None,
    out: str | Path | None = None,
    config: RunConfig | str | Path | None = None,
    dataset: MultimodalDataset | None = None,
    resume: bool = False,
    epoch_callback: Callable[[int, dict[str, Any]], None] | None = None,
    **kwargs: Any,
) -> FitResult:
    """Train a registered model on a dataset; write a run directory when ``out`` is given.

    Keyword arguments are those of :func:`make_config` (``data_options``,
    ``model_options``, ``overrides``, or any :class:`TrainConfig` field).
    With ``resume=True`` the run in ``out`` continues from its last epoch.
    ``epoch_callback(epoch, row)`` is called after every epoch with its logged
    metrics row and may raise to stop training (sweeps prune trials this way).
    """
    if resume:
        if out is None:
            raise RunError("resume needs the run directory (out=...)")
        cfg = load_config(Path(out) / rundir.CONFIG)
    else:
        cfg = make_config(model, data, config, **kwargs)
    ds = dataset if dataset is not None else dataset_from_config(cfg.data)
    seed_everything(cfg.train.seed)  # the initial weights depend on the training seed alone
    net = build_model(cfg.model.name, ds.spec, **cfg.model.options)
    return Trainer(net, ds, cfg.train, out, cfg, epoch_callback=epoch_callback).fit(resume=resume)


@dataclass
class Run:
    """A trained run loaded from disk."""

    path: Path
    config: RunConfig
    model: MultimodalModel
    results: dict[str, Any]
    standardizer: Standardizer | None
    spec: DatasetSpec

    def dataset(self, name: str | None = None, path: str | None = None, **options: Any) -> MultimodalDataset:
        """The run's dataset (or another one) prepared as the run's training data were:
        standardised with the run's own training statistics."""
        d = self.config.data
        if name is None:
            ds = load_dataset(d.name, d.path, seed=d.seed, standardize=False, replace_nonfinite=d.replace_nonfinite,
                              **{**d.options, **options})
        else:
            ds = load_dataset(name, path, seed=d.seed, standardize=False, replace_nonfinite=d.replace_nonfinite, **options)
        check_compatible(self.spec, ds.spec, str(path or name or d.name))
        if self.standardizer is not None:
            self.standardizer.apply_(ds.features, ds.lengths)
            ds.standardizer = self.standardizer
        return ds


def check_compatible(expected: DatasetSpec, got: DatasetSpec, where: str) -> None:
    """Raise DataError unless ``got`` has the modalities and widths a model was trained on."""
    if set(expected.names) - set(got.names):
        raise DataError(f"{where}: missing modalities {sorted(set(expected.names) - set(got.names))} "
                        f"(the run was trained on {', '.join(expected.names)})")
    for m in expected.modalities:
        g = got[m.name]
        if g.dim != m.dim or g.sequence != m.sequence:
            shape = lambda s: f"{'sequence' if s.sequence else 'vector'} of width {s.dim}"  # noqa: E731
            raise DataError(f"{where}: modality {m.name!r} is a {shape(g)}; the run expects a {shape(m)}")
    if expected.task.kind != got.task.kind:
        raise DataError(f"{where}: task is {got.task.kind}; the run was trained for {expected.task.kind}")


def load_model_file(path: str | Path) -> tuple[MultimodalModel, dict[str, Any]]:
    """Rebuild a model from a ``model.pt`` written by the engine."""
    payload = rundir.torch_load(path)
    if not isinstance(payload, dict) or payload.get("format") != "mmib-model":
        raise RunError(f"{path}: not an mmib model file")
    spec = DatasetSpec.from_dict(payload["spec"])
    model = build_model(payload["model"], spec, **payload["options"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise RunError(f"{path}: weights do not match model {payload['model']!r} ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, payload


def load_run(path: str | Path) -> Run:
    """Load a finished run directory (config, best weights, results)."""
    p = rundir.check_run_dir(path)
    if not (p / rundir.MODEL).is_file():
        raise RunError(f"{p}: the run has no {rundir.MODEL} yet (unfinished? resume it with --resume)")
    cfg = load_config(p / rundir.CONFIG)
    model, payload = load_model_file(p / rundir.MODEL)
    results = rundir.read_json(p / rundir.RESULTS) if (p / rundir.RESULTS).is_file() else {}
    st = Standardizer.from_state_dict(payload["standardizer"]) if payload.get("standardizer") else None
    return Run(p, cfg, model, results, st, model.spec)


def evaluate(
    run: Run | MultimodalModel | str | Path,
    dataset: MultimodalDataset | None = None,
    split: str = "test",
    batch_size: int = 512,
    device: str = "cpu",
) -> dict[str, float]:
    """Metrics of a run (or model) on ``split`` of ``dataset`` (default: the run's own data)."""
    if isinstance(run, (str, Path)):
        run = load_run(run)
    if isinstance(run, Run):
        model = run.model
        dataset = dataset if dataset is not None else run.dataset()
    else:
        model = run
        if dataset is None:
            raise DataError("evaluate(model) needs a dataset")
    model.to(device)
    return _evaluate(model, dataset, split, batch_size, device)


def predict(
    run: Run | str | Path,
    dataset: MultimodalDataset | None = None,
    split: str = "test",
    representations: bool = False,
) -> Predictions:
    """Predictions of a run on a split (with learned representations if asked)."""
    if isinstance(run, (str, Path)):
        run = load_run(run)
    dataset = dataset if dataset is not None else run.dataset()
    return _predict(run.model, dataset, split, representations=representations)


def predict_arrays(
    run: Run,
    features: dict[str, np.ndarray],
    lengths: dict[str, np.ndarray] | None = None,
    extras: dict[str, np.ndarray] | None = None,
    batch_size: int = 512,
    source: str = "input",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Predict from raw feature arrays (standardised with the run's statistics).

    Returns the predictions and the named representations of the model output.
    """
    spec = run.spec
    feats: dict[str, torch.Tensor] = {}
    n = None
    for m in spec.modalities:
        if m.name not in features:
            raise DataError(f"{source}: missing modality {m.name!r} (the run expects {', '.join(spec.names)})")
        x = torch.as_tensor(np.asarray(features[m.name], dtype=np.float32)).clone()
        want = 3 if m.sequence else 2
        if x.dim() != want or x.shape[-1] != m.dim:
            raise DataError(f"{source}: {m.name!r} has shape {tuple(x.shape)}; expected "
                            f"{'(N, L, ' if m.sequence else '(N, '}{m.dim})")
        if not torch.isfinite(x).all():
            raise DataError(f"{source}: {m.name!r} has {int((~torch.isfinite(x)).sum())} NaN/inf values")
        if n is not None and x.shape[0] != n:
            raise DataError(f"{source}: {m.name!r} has {x.shape[0]} samples, other modalities {n}")
        n = x.shape[0]
        feats[m.name] = x
    assert n is not None
    lens = {k: torch.as_tensor(np.asarray(v)).long() for k, v in (lengths or {}).items() if k in feats}
    for name, x in feats.items():
        if x.dim() == 3 and name not in lens:
            lens[name] = torch.full((n,), x.shape[1], dtype=torch.long)
    if run.standardizer is not None:
        run.standardizer.apply_(feats, lens)
    ext = {k: torch.as_tensor(np.asarray(v)) for k, v in (extras or {}).items()}
    model = run.model.eval()
    preds, named = [], {}
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            idx = torch.arange(s, min(s + batch_size, n))
            batch = Batch({k: v[idx] for k, v in feats.items()}, {k: v[idx] for k, v in lens.items()}, None, idx,
                          {k: v[idx] for k, v in ext.items()})
            out = model(batch)
            preds.append(out.prediction.float())
            for k, v in out.representations.items():
                if v.dim() >= 1 and v.shape[0] == len(idx):
                    named.setdefault(k, []).append(v.float())
    return torch.cat(preds), {k: torch.cat(v) for k, v in named.items()}


__all__ = [
    "Run", "TrainConfig", "build_model", "dataset_from_config", "evaluate", "load_dataset", "load_run",
    "make_config", "predict", "predict_arrays", "train",
]
