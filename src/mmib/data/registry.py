"""Datasets by name: built-in synthetic sets and loaders for user files.

``load_dataset("sim-i", n_samples=3000)`` or ``load_dataset("mmsa",
path="aligned_50.pkl")``; a path to an existing file works as a name too (the
format is detected). Loader options are validated against the loader's
signature, so a typo is an error that names the valid options.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmib.config import coerce, suggest
from mmib.data.dataset import MultimodalDataset
from mmib.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., MultimodalDataset]
    description: str
    needs_path: bool = False


def _sim(variant: str) -> Callable[..., MultimodalDataset]:
    from mmib.data.synthetic import make_sim

    def load(
        n_samples: int = 10_000, seed: int = 0, test_fraction: float = 0.1, valid_fraction: float = 0.1,
        a1_dim: int | None = None, a2_dim: int | None = None, shared_dim: int = 200, superfluous_dim: int = 200,
    ) -> MultimodalDataset:
        return make_sim(variant, n_samples, seed, test_fraction, valid_fraction, a1_dim, a2_dim, shared_dim, superfluous_dim)

    return load


def _entries() -> dict[str, DatasetEntry]:
    from mmib.data import anomaly, claims, files, synthetic, text

    entries = [
        DatasetEntry("sim-i", _sim("sim-i"), "SIM-I: 2 modalities, a1=500 > a2=100 (OMIB App. F), binary"),
        DatasetEntry("sim-ii", _sim("sim-ii"), "SIM-II: 2 modalities, a1=100 < a2=500, binary"),
        DatasetEntry("sim-iii", _sim("sim-iii"), "SIM-III: 2 modalities, a1=a2=300 (balanced), binary"),
        DatasetEntry("sim-anomaly", anomaly.make_sim_anomaly, "SIM-based anomaly detection: normal train, anomalies in valid/test"),
        DatasetEntry("sim-msa", synthetic.make_sim_msa, "synthetic MOSI-shaped sentiment regression (text/audio/vision)"),
        DatasetEntry("sim-text", text.make_sim_text,
                     "templated sentiment sentences: frozen MiniLM token features + token ids (needs the text extra)"),
        DatasetEntry("sim-msa-small", synthetic.make_sim_msa_small,
                     "sim-msa as a small real file: 1300/230/690, text 50x384 tokens, audio/vision pure noise"),
        DatasetEntry("uci-mfeat", files.load_uci_mfeat, "UCI Multiple Features: 2,000 digits, 6 real views, 10 classes"),
        DatasetEntry("mmsa", files.load_mmsa_pickle, "MMSA pickle (aligned_50.pkl / unaligned_50.pkl: MOSI, MOSEI, SIMS)", True),
        DatasetEntry("mult", files.load_mult_pickle, "MulT/CMU pickle (mosi_data.pkl, mosei_senti_data.pkl, iemocap_data.pkl)", True),
        DatasetEntry("npz", files.load_npz, "generic .npz: one array per modality, y, split", True),
        DatasetEntry("file", files.load_path, "any supported file, format detected (.npz, MMSA or MulT pickle)", True),
    ]
    for alias, what in (("mosi", "CMU-MOSI"), ("mosei", "CMU-MOSEI"), ("sims", "CH-SIMS"), ("iemocap", "IEMOCAP")):
        entries.append(DatasetEntry(alias, files.load_path, f"{what} from a local MMSA or MulT pickle (--data-path)", True))
    for name, (loader, description) in claims.CLAIM_DATASETS.items():
        entries.append(DatasetEntry(name, loader, description))
    extra = getattr(synthetic, "EXTRA_DATASETS", {})
    for name, (loader, description) in extra.items():
        entries.append(DatasetEntry(name, loader, description))
    return {e.name: e for e in entries}


def list_datasets() -> list[DatasetEntry]:
    return sorted(_entries().values(), key=lambda e: e.name)


def dataset_names() -> set[str]:
    """The names of the registered datasets."""
    return set(_entries())


def loader_options(loader: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword options a loader accepts (its signature minus ``path``)."""
    return {k: p for k, p in inspect.signature(loader).parameters.items() if k != "path"}


def _select_items(value: Any) -> list[str] | None:
    """``data.select``: a list or a comma-separated string of modalities / ground-truth parts."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigError(f"data.select {value!r}: expected modality or ground-truth part names, e.g. a0,b0 or x1")
    return [i.strip() for i in items]


def data_option_values(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of registered dataset ``name``, checked against its loader and coerced to the
    loader's types (``select`` excepted): a typo is an error naming the valid options, before any
    data are read (``mmib study --dry-run`` checks every row's data options with it)."""
    entries = _entries()
    if name not in entries:
        raise ConfigError(f"unknown dataset {name!r}{suggest(name, entries)}; available: {', '.join(sorted(entries))}")
    entry = entries[name]
    params = loader_options(entry.loader)
    hints = typing.get_type_hints(entry.loader)
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key == "select":
            continue
        if key not in params:
            raise ConfigError(
                f"dataset {name!r} has no option {key!r}{suggest(key, [*params, 'select'])}; "
                f"options: {', '.join(params) or 'none'} (and select, for every dataset)"
            )
        kwargs[key] = coerce(value, hints.get(key, Any), f"data.{key}")
    return kwargs


def load_dataset(
    name: str,
    path: str | Path | None = None,
    seed: int = 0,
    standardize: bool = True,
    replace_nonfinite: bool = False,
    trust_pickle: bool = False,
    **options: Any,
) -> MultimodalDataset:
    """Load dataset ``name`` (or a file path), validate it and, by default, standardise
    every modality with statistics of its training split.

    Every dataset takes ``select`` (``--set data.select=a0,b0``): keep only those
    modalities or ground-truth parts (:meth:`MultimodalDataset.select`).

    ``trust_pickle`` opens MMSA/MulT pickles with plain ``pickle.load``, which runs any
    code the file holds; by default they go through a restricted unpickler that admits
    only the plain data those layouts contain (:func:`mmib.data.files.read_feature_pickle`)."""
    entries = _entries()
    if name not in entries:
        if Path(name).exists() and path is None:
            name, path = "file", name
        else:
            raise ConfigError(f"unknown dataset {name!r}{suggest(name, entries)}; available: {', '.join(sorted(entries))}")
    entry = entries[name]
    select = _select_items(options.pop("select", None))
    params = loader_options(entry.loader)
    kwargs = data_option_values(name, options)
    if "seed" in params:
        kwargs.setdefault("seed", seed)
    if "replace_nonfinite" in params:
        kwargs.setdefault("replace_nonfinite", replace_nonfinite)
    if "trust_pickle" in params:
        kwargs.setdefault("trust_pickle", trust_pickle)
    elif trust_pickle:
        raise ConfigError(f"data.trust_pickle: dataset {name!r} reads no pickle files")
    sig_path = "path" in inspect.signature(entry.loader).parameters
    if entry.needs_path and path is None:
        raise ConfigError(f"dataset {name!r} reads a file: pass --data-path PATH")
    if path is not None:
        if not sig_path:
            raise ConfigError(f"dataset {name!r} is built in and takes no --data-path")
        kwargs["path"] = str(path)
    try:
        ds = entry.loader(**kwargs)
    except MemoryError:
        raise DataError(f"dataset {name!r}: not enough memory to build it with {kwargs}") from None
    if select is not None:
        ds = ds.select(select)
    if standardize:
        ds.standardize()
    return ds
