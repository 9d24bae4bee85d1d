"""Keel's durable stores: checkpoints, leases, the intent ledger, the thread guard, the inbox,
budgets, breakers and the flight record, each in SQLite and (most) in PostgreSQL.

The package re-exports nothing (it spans layers, like ``graph``): import from the module you mean.
"""
