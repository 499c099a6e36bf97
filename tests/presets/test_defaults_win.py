"""The defaults beat the linear yardstick on a small generated sequence set (issue 12, requirement 7)."""

import pytest

from mmib.api import make_config, train
from mmib.data.registry import load_dataset


@pytest.fixture(scope="module")
def small_sequences():
    # sim-msa-small as shipped (1,300 / 230 / 690 samples, 50-step sequences, 384-d text), data seed 0
    return load_dataset("sim-msa-small", seed=0)


@pytest.fixture(scope="module")
def linear_mae(small_sequences) -> float:
    return train(model="linear", dataset=small_sequences, progress=False, checkpoint=False).test["mae"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["concat", "c-mib"])
def test_model_at_its_defaults_beats_linear_on_small_sequences(small_sequences, linear_mae, model):
    """Measured (seeds 0-2): linear 0.98 test MAE, concat 0.88, c-mib 0.86; the margin asserted is 0.03."""
    result = train(model=model, dataset=small_sequences, progress=False, checkpoint=False, seed=0)
    assert result.test["mae"] < linear_mae - 0.03, (model, result.test["mae"], linear_mae)


@pytest.mark.slow
def test_omib_at_its_sim_msa_preset_beats_linear():
    """mmib/presets/omib.yaml#sim-msa (beta 1e-4 instead of the MINE bound, ~0.016 here; lr 2.5e-4, weight
    decay 0.1): measured seed 0 test MAE 0.830 against linear's 0.861 (0.903 with the bound's beta)."""
    assert make_config("omib", "sim-msa").model.options["beta"] == pytest.approx(1e-4)
    linear = train(model="linear", data="sim-msa", progress=False, checkpoint=False).test["mae"]
    result = train(model="omib", data="sim-msa", progress=False, checkpoint=False, seed=0)
    assert result.test["mae"] < linear - 0.015, (result.test["mae"], linear)
