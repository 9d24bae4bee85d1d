"""Eval scenarios, the runner and its baselines live here (not built yet: see the README)."""
