"""A sweep shared through a real PostgreSQL server: two local workers, then a second "machine" joining.

The server is the one ``.ci/run`` starts (``MMIB_TEST_POSTGRES_URL``), else a
throwaway cluster that the ``postgres_url`` fixture (``conftest.py``) starts; the
test is skipped, with the reason, only where neither is possible.
"""

from __future__ import annotations

import uuid

import pytest

optuna = pytest.importorskip("optuna")

PARAMS = ["lr=loguniform:1e-3:1e-2", "head_hidden=choice:8,16,32"]


@pytest.mark.slow
def test_two_workers_and_a_second_machine_share_one_postgres_study(postgres_url, tmp_path, tiny_data, tiny_sets):
    from mmib.experiments.sweep import sweep

    study = f"mmib-test-{uuid.uuid4().hex[:8]}"
    common = dict(storage=postgres_url, study=study, data_options=tiny_data, overrides=tiny_sets, epochs=1,
                  sampler="random", pruner="median", log=None)
    try:
        first = sweep("late", "sim-msa", PARAMS, tmp_path / "machine-a", trials=4, workers=2, **common)
        complete = [t for t in first.trials if t["state"] == "COMPLETE"]
        assert len(complete) == 4
        assert len({t["user_attrs"]["worker"] for t in complete}) == 2  # two processes joined the study
        assert "postgresql+psycopg2://postgres@127.0.0.1" in (tmp_path / "machine-a" / "sweep.md").read_text()

        # another "machine" (its own directory) joins the same study and adds two trials
        second = sweep("late", "sim-msa", PARAMS, tmp_path / "machine-b", trials=6, workers=1, **common)
        done = [t for t in second.trials if t["state"] == "COMPLETE"]
        assert len(done) == 6
        dirs = {t["user_attrs"]["run_dir"].split("/trials/")[0] for t in done}
        assert dirs == {str((tmp_path / "machine-a").resolve()), str((tmp_path / "machine-b").resolve())}
        loaded = optuna.load_study(study_name=study, storage=postgres_url)
        assert len(loaded.trials) == len(second.trials) and loaded.best_value == second.best["value"]
    finally:
        try:
            optuna.delete_study(study_name=study, storage=postgres_url)
        except Exception:  # noqa: BLE001 - the study may not exist if the sweep failed early
            pass


@pytest.mark.slow
@pytest.mark.parametrize("form", ["query", "userinfo"])
def test_a_postgres_password_is_masked_on_stdout_stderr_and_in_every_file(postgres_url, tmp_path, capsys, monkeypatch,
                                                                          tiny_data, tiny_sets, form):
    """The server trusts local connections, so the password is sent and ignored: the sweep succeeds."""
    from mmib.cli import main

    secret = f"pg-Secret-{uuid.uuid4().hex[:6]}"
    if form == "query":
        url = postgres_url + ("&" if "?" in postgres_url else "?") + f"password={secret}"
    else:
        url = postgres_url.replace("postgres@", f"postgres:{secret}@", 1)
        assert secret in url
    study = f"mmib-mask-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "sweep"
    monkeypatch.setenv("MMIB_STORAGE", url)
    args = ["sweep", "-m", "late", "-d", "sim-msa", "--out", str(out), "--study", study, "--trials", "1", "--epochs",
            "1", "--sampler", "random", "--pruner", "none", *(f"--param={p}" for p in PARAMS),
            *(f"--set=data.{k}={v}" for k, v in tiny_data.items()), *(f"--set={s}" for s in tiny_sets)]
    try:
        assert main(args) == 0
        printed = "".join(capsys.readouterr())
        assert secret not in printed and "***" in printed
        for name in ("sweep.md", "trials.json", "sweep.json", "trials.csv"):
            assert secret not in (out / name).read_text()
        assert "***" in (out / "sweep.md").read_text()
        # the error path: the same study with other settings is refused, still masked
        assert main([*args, "--param", "hidden=choice:8,16"]) == 2
        err = capsys.readouterr().err
        assert "was created with other settings" in err and secret not in err
    finally:
        try:
            optuna.delete_study(study_name=study, storage=postgres_url)
        except Exception:  # noqa: BLE001
            pass
