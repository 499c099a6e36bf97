import pytest

from mmib.cli import main
from mmib.data.dataset import DatasetSpec
from mmib.errors import ConfigError
from mmib.models.complexity import count_parameters, overhead, parse_dims, parse_task, spec_from_dims
from mmib.models.registry import build_model


def test_parse_dims_and_task():
    assert parse_dims("text=768, audio=74,vision=47") == {"text": 768, "audio": 74, "vision": 47}
    for bad in ("text", "text=0", "text=x", "", "a=1,a=2"):
        with pytest.raises(ConfigError, match="--dims"):
            parse_dims(bad)
    assert parse_task("multiclass:4").num_classes == 4
    with pytest.raises(ConfigError, match="--task"):
        parse_task("ordinal")


def test_counts_match_built_models_and_overhead():
    spec = spec_from_dims({"a": 6, "b": 4}, seq_len=5)
    rows = count_parameters(["concat", "c-mib", "e-mib"], spec, ["fusion=add", "ib_hidden=16", "head_hidden=8"])
    counts = {r.model: r.params for r in rows}
    assert counts["c-mib"] == build_model("c-mib", spec, fusion="add", ib_hidden=16, head_hidden=8).num_parameters()
    assert counts["concat"] == build_model("concat", spec, head_hidden=8).num_parameters()  # fusion ignored for concat
    extra = overhead(rows)
    assert extra["concat"] == (0, 0.0)
    assert extra["c-mib"][0] == counts["c-mib"] - counts["concat"]
    # C-MIB = E-MIB + one bottleneck (16 hidden, z 50) and one linear decoder per modality (width 128 in)
    per_modality = (128 * 16 + 16) + 2 * (16 * 50 + 50) + (50 + 1)
    fused_in_change = (50 - 128) * 16  # add fusion of z_m (50) instead of encodings (128)
    assert counts["c-mib"] - counts["e-mib"] == 2 * per_modality + fused_in_change


def test_models_that_cannot_be_built_are_reported_not_raised():
    spec = DatasetSpec.simple({"a": 3, "b": 3, "c": 3, "d": 3})
    rows = count_parameters(["c-mib"], spec, ["fusion=tensor"])
    assert rows[0].params is None and "lmf" in rows[0].error


def test_cli_params(capsys):
    assert main(["models", "--params", "--models", "concat,c-mib", "--dims", "text=768,audio=74,vision=47",
                 "--seq-len", "50"]) == 0
    out = capsys.readouterr().out
    assert "text 50x768" in out and "c-mib" in out and "vs concat" in out
    assert main(["models", "--params", "--dims", "a=x"]) == 2
