import numpy as np
import pytest

from mmib.data import list_datasets, load_dataset
from mmib.errors import ConfigError


def test_builtin_names_listed():
    names = {e.name for e in list_datasets()}
    assert {"sim-i", "sim-ii", "sim-iii", "sim-msa", "uci-mfeat", "mmsa", "mult", "npz"} <= names


def test_options_are_validated_and_coerced():
    ds = load_dataset("sim-i", n_samples="200", seed=1)
    assert len(ds) == 200 and ds.standardizer is not None
    with pytest.raises(ConfigError, match="no option 'n_sample'.*did you mean 'n_samples'"):
        load_dataset("sim-i", n_sample=10)
    with pytest.raises(ConfigError, match="unknown dataset 'sim-1'"):
        load_dataset("sim-1")
    with pytest.raises(ConfigError, match="pass --data-path"):
        load_dataset("mmsa")
    with pytest.raises(ConfigError, match="takes no --data-path"):
        load_dataset("sim-msa", path="x.pkl")


def test_a_file_path_works_as_a_name(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "mine.npz"
    np.savez(p, a=rng.normal(size=(20, 3)), b=rng.normal(size=(20, 2)), y=rng.normal(size=20),
             split=np.array(["train"] * 14 + ["valid"] * 3 + ["test"] * 3))
    ds = load_dataset(str(p))
    assert ds.modalities == ("a", "b") and ds.task.kind == "regression" and ds.split_size("train") == 14
