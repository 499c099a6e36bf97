"""The Python API, mirroring the CLI: load data, build, train, evaluate, reload runs.

>>> from mmib import load_dataset, build_model, train, evaluate, load_run
>>> result = train(model="concat", data="sim-i", out="runs/demo", epochs=5, data_options={"n_samples": 2000})
>>> run = load_run("runs/demo"); evaluate(run, split="test")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmib.config import (
    DataConfig, ModelConfig, RunConfig, TrainConfig, apply_overrides, copy_config, dump_config, load_config,
    read_config_dict,
)
from mmib.data.dataset import Batch, DatasetSpec, MultimodalDataset, Standardizer
from mmib.data.registry import data_option_values, dataset_names, load_dataset
from mmib.errors import ConfigError, DataError, MMIBError, RunError
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
        trust_pickle=cfg.trust_pickle, **cfg.options,
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
    """Assemble a :class:`RunConfig` from a base config, names, options and ``key=value`` overrides,
    then fill what none of them set from the model's and dataset's presets (:mod:`mmib.presets`)."""
    from mmib import presets

    if isinstance(config, (str, Path)):
        cfg = load_config(config)
        explicit = presets.file_keys(read_config_dict(config))
    else:
        cfg = copy_config(config or RunConfig())
        explicit = presets.changed_keys(cfg)
    if model is not None and model != cfg.model.name:
        explicit = {k for k in explicit if not k.startswith("model.")}  # the options start afresh
    explicit |= presets.flatten("model", model_options or {}).keys() | {f"train.{k}" for k in train_options}
    explicit |= presets.override_keys(list(overrides or []))
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
        cfg = presets.resolve(cfg, explicit)
        model_option_values(cfg.model.name, cfg.model.options)
    if cfg.data.name in dataset_names():  # so does a misspelled option of a registered dataset
        data_option_values(cfg.data.name, cfg.data.options)
    return cfg


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
    overwrite: bool = True,
    trust_pickle: bool | None = None,
    **kwargs: Any,
) -> FitResult:
    """Train a registered model on a dataset; write a run directory when ``out`` is given.

    Keyword arguments are those of :func:`make_config` (``data_options``,
    ``model_options``, ``overrides``, or any :class:`TrainConfig` field).
    With ``resume=True`` the run in ``out`` continues from its last epoch.
    ``epoch_callback(epoch, row)`` is called after every epoch with its logged
    metrics row and may raise to stop training (sweeps prune trials this way).
    ``overwrite=False`` refuses an ``out`` that already holds a run (checked under the run's
    lock, so two processes started together cannot both write it). ``trust_pickle`` opens
    pickled data files with plain ``pickle.load``; a resumed run's stored ``config.yaml``
    never grants it by itself.
    """
    if dataset is not None and not isinstance(dataset, MultimodalDataset):
        raise ConfigError(f"dataset: expected a loaded MultimodalDataset, got {type(dataset).__name__} "
                          f"{dataset!r:.60}; give a dataset name or file path as data=")
    if resume:
        if out is None:
            raise RunError("resume needs the run directory (out=...)")
        if not Path(out).is_dir():
            raise RunError(f"{out}: no such run directory (no checkpoint to resume from)")
        if not (Path(out) / rundir.CONFIG).is_file():
            raise RunError(f"{out}: no run to resume here (no {rundir.CONFIG}, no checkpoint)")
        cfg = load_config(Path(out) / rundir.CONFIG)
        cfg.data.trust_pickle = bool(trust_pickle)
    else:
        cfg = make_config(model, data, config, **kwargs)
        if trust_pickle is not None:
            cfg.data.trust_pickle = trust_pickle
    ds = dataset if dataset is not None else dataset_from_config(cfg.data)
    seed_everything(cfg.train.seed)  # the initial weights depend on the training seed alone
    net = build_model(cfg.model.name, ds.spec, **cfg.model.options)
    trainer = Trainer(net, ds, cfg.train, out, cfg, epoch_callback=epoch_callback, overwrite=overwrite)
    return trainer.fit(resume=resume)


def train_together(
    configs: Sequence[RunConfig | None],
    outs: Sequence[str | Path | None] | None = None,
    *,
    resume: bool | Sequence[bool] = False,
    datasets: Sequence[MultimodalDataset | None] | None = None,
    epoch_callbacks: Sequence[Callable[[int, dict[str, Any]], None] | None] | None = None,
    log: Callable[[str], None] | None = None,
    fallback: bool = True,
) -> list[FitResult | Exception]:
    """Train several runs of one network in this process, as one vectorised ensemble when they
    can be (:mod:`mmib.train.ensemble`), else one at a time; ``log`` gets one line saying which.
    With ``fallback=False`` runs that cannot train together raise
    :class:`~mmib.train.ensemble.EnsembleUnsupported` (saying why) before any training instead.

    ``configs[i]`` is run i's full config (None when resuming: read from ``outs[i]``); runs may
    differ in their training seed, data seed (datasets of equal shapes), the training options of
    :data:`~mmib.train.ensemble.PER_MEMBER_TRAIN_OPTIONS` and the model's ``ensemble_options``.
    ``datasets[i]``: run i's dataset if already loaded (runs with equal data configs otherwise
    share one load). Each run writes its ordinary run directory ``outs[i]`` (or none) and gets
    its own ``epoch_callbacks[i]``. Returns per run its :class:`FitResult` or the exception that
    ended it (``KeyboardInterrupt`` propagates; every run stays resumable).
    """
    from mmib.train.ensemble import EnsembleUnsupported, Member, model_unsupported, train_members

    k = len(configs)
    outs = list(outs) if outs is not None else [None] * k
    flags = [bool(resume)] * k if isinstance(resume, bool) else [bool(r) for r in resume]
    callbacks = list(epoch_callbacks) if epoch_callbacks is not None else [None] * k
    given = list(datasets) if datasets is not None else [None] * k
    if not (len(outs) == len(flags) == len(callbacks) == len(given) == k):
        raise ConfigError("train_together: configs, outs, resume, datasets and epoch_callbacks differ in length")
    cfgs: list[RunConfig] = []
    for cfg, out, again in zip(configs, outs, flags):
        if again:
            if out is None:
                raise RunError("resume needs the run directory (outs[i])")
            cfg = load_config(Path(out) / rundir.CONFIG)
        elif cfg is None:
            raise ConfigError("train_together: a run without config must be resumed from its run directory")
        cfgs.append(cfg)
    loaded: dict[str, MultimodalDataset] = {}
    sets: list[MultimodalDataset] = []
    for cfg, ds in zip(cfgs, given):
        if ds is None:
            key = dump_config(RunConfig(data=cfg.data))
            if key not in loaded:
                loaded[key] = dataset_from_config(cfg.data)
            ds = loaded[key]
        sets.append(ds)

    def build(i: int) -> MultimodalModel:
        seed_everything(cfgs[i].train.seed)  # as train() does: the initial weights depend on the seed alone
        return build_model(cfgs[i].model.name, sets[i].spec, **cfgs[i].model.options)

    first = build(0)
    reason = model_unsupported(first, cfgs[0].train) if k > 1 else "a single run"
    if reason is not None and k > 1 and not fallback:
        raise EnsembleUnsupported(reason)
    if reason is not None:
        if log and k > 1:
            log(f"training {k} runs of {cfgs[0].model.name} one at a time: {reason}")
        results: list[FitResult | Exception] = []
        for i in range(k):
            try:
                net = first if i == 0 else build(i)
                results.append(Trainer(net, sets[i], cfgs[i].train, outs[i], cfgs[i], callbacks[i]).fit(resume=flags[i]))
            except Exception as exc:  # noqa: BLE001 - one failed run does not stop the others
                results.append(exc)
            first = None  # type: ignore[assignment]  # free it once trained
        return results
    members = [Member(first if i == 0 else build(i), sets[i], cfgs[i].train, outs[i], cfgs[i], callbacks[i], flags[i])
               for i in range(k)]
    return train_members(members, log, fallback)


@dataclass
class Run:
    """A trained run loaded from disk."""

    path: Path
    config: RunConfig
    model: MultimodalModel
    results: dict[str, Any]
    standardizer: Standardizer | None
    spec: DatasetSpec
    #: The model file's other entries (``epoch``, ``extractor`` settings of `mmib extract` features, ...).
    meta: dict[str, Any] = field(default_factory=dict)

    def dataset(
        self, name: str | None = None, path: str | None = None, trust_pickle: bool = False, **options: Any
    ) -> MultimodalDataset:
        """The run's dataset (or another one) prepared as the run's training data were:
        standardised with the run's own training statistics. A pickled data file opens the
        old way only with ``trust_pickle`` (the run's stored config never grants it)."""
        d = self.config.data
        if name is None:
            ds = load_dataset(d.name, d.path, seed=d.seed, standardize=False, replace_nonfinite=d.replace_nonfinite,
                              trust_pickle=trust_pickle, **{**d.options, **options})
        else:
            ds = load_dataset(name, path, seed=d.seed, standardize=False, replace_nonfinite=d.replace_nonfinite,
                              trust_pickle=trust_pickle, **options)
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
    """Rebuild a model from a ``model.safetensors`` written by the engine (no code in the file runs)."""
    p = Path(path)
    if p.suffix == ".pt" or (not p.is_file() and p.with_name(rundir.LEGACY_MODEL).is_file()):
        raise rundir.legacy_error(p.parent, p.name if p.suffix == ".pt" else rundir.LEGACY_MODEL)
    payload = rundir.read_state(p, rundir.MODEL_FORMAT, "mmib model file")
    rundir.require_keys(payload, ("model", "options", "spec", "state_dict"), p, "mmib model file")
    if not isinstance(payload["state_dict"], dict) or not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise RunError(f"{p}: 'state_dict' is not a mapping of tensors")
    if not isinstance(payload["options"], dict):
        raise RunError(f"{p}: 'options' is not a mapping")
    try:
        spec = DatasetSpec.from_dict(payload["spec"])
    except (KeyError, TypeError, ValueError, AttributeError, MMIBError) as exc:
        raise RunError(f"{p}: malformed 'spec' ({type(exc).__name__}: {exc})") from None
    try:
        model = build_model(str(payload["model"]), spec, **payload["options"])
    except MMIBError as exc:
        raise RunError(f"{p}: {exc}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise RunError(f"{p}: weights do not match model {payload['model']!r} ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, payload


def load_run(path: str | Path) -> Run:
    """Load a finished run directory (config, best weights, results)."""
    p = rundir.check_run_dir(path)
    model_file = rundir.model_path(p)
    cfg = load_config(p / rundir.CONFIG)
    model, payload = load_model_file(model_file)
    results = rundir.read_json(p / rundir.RESULTS) if (p / rundir.RESULTS).is_file() else {}
    st = None
    if payload.get("standardizer"):
        try:
            st = Standardizer.from_state_dict(payload["standardizer"])
        except (KeyError, TypeError, AttributeError):
            raise RunError(f"{model_file}: malformed 'standardizer'") from None
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "standardizer")}
    return Run(p, cfg, model, results, st, model.spec, meta)


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
    if n == 0:
        raise DataError(f"{source}: no samples (every modality array has 0 rows)")
    lens = {k: _checked_lengths(v, feats[k], n, f"{source}: '{k}_lengths'")
            for k, v in (lengths or {}).items() if k in feats}
    for name, x in feats.items():
        if x.dim() == 3 and name not in lens:
            lens[name] = torch.full((n,), x.shape[1], dtype=torch.long)
    if run.standardizer is not None:
        run.standardizer.apply_(feats, lens)
    ext = {}
    for k, v in (extras or {}).items():
        e = torch.as_tensor(np.asarray(v))
        if e.dim() == 0 or e.shape[0] != n:
            raise DataError(f"{source}: {k!r} has shape {tuple(e.shape)}; expected {n} rows like the modalities")
        if k == "text_bert" and (e.dim() != 3 or e.shape[1] != 3 or e.is_floating_point()):
            raise DataError(f"{source}: 'text_bert' has shape {tuple(e.shape)} ({e.dtype}); expected integer (N, 3, L)")
        ext[k] = e
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


def _checked_lengths(value: Any, x: torch.Tensor, n: int, where: str) -> torch.Tensor:
    """Per-sample valid steps of a sequence (0..L) or a 0/1 presence flag of a vector, checked."""
    arr = np.asarray(value)
    if arr.shape != (n,):
        raise DataError(f"{where} has shape {tuple(arr.shape)}; expected ({n},), one length per sample")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{where} is not numeric (dtype {arr.dtype})")
    limit = x.shape[1] if x.dim() == 3 else 1
    f = arr.astype(np.float64)
    if not np.isfinite(f).all() or not np.array_equal(f, np.round(f)) or (f < 0).any() or (f > limit).any():
        raise DataError(f"{where} must hold whole numbers in [0, {limit}] (found {f.min():g}..{f.max():g})")
    return torch.as_tensor(f.astype(np.int64))


__all__ = [
    "Run", "TrainConfig", "build_model", "dataset_from_config", "evaluate", "load_dataset", "load_run",
    "make_config", "predict", "predict_arrays", "train", "train_together",
]
