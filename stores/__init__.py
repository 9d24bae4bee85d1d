"""Keel's durable stores: checkpoints, leases, the intent ledger, the thread guard, the inbox,
budgets, breakers and the flight record, each a base class with its SQLite and (but breakers)
PostgreSQL implementations.

``stores.backends.open_stores(settings)`` is the one place that picks the backend. The package
re-exports nothing (it spans layers, like ``graph``): import from the module you mean.
"""
