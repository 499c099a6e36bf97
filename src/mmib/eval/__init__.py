"""Evaluation: metrics (``mmib.eval.metrics``)."""
