"""Experiments at scale, for every registered model: multi-seed comparisons with
significance tests (:mod:`~mmib.experiments.compare`), Optuna sweeps in SQLite or
PostgreSQL (:mod:`~mmib.experiments.sweep`), Markdown reports with figures
(:mod:`~mmib.experiments.report`) and robustness evaluation
(:mod:`~mmib.experiments.robust`).

Everything goes through the model registry, :func:`mmib.api.train`, run
directories and :class:`~mmib.models.base.ModelOutput`, so a newly registered
model needs nothing here. Optuna and matplotlib come with the ``experiments``
extra (``pip install 'mmib[experiments]'``).
"""

from __future__ import annotations
