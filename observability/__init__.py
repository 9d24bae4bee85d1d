"""Observability: the flight recorder (``recorder``, ``store``, ``events``), redaction, LangSmith
tracing, JSON logs, the trace and explain views (``views``) and deterministic replay
(``replay``, which re-executes the app from a record and so sits on top of the layers)."""
