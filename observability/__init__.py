"""The flight recorder, tracing and replay live here (not built yet: see the README)."""
