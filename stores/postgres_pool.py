"""The checkpoints' connection pool: a Postgres that stops answering mid-run is a clear error.

Every call ``PostgresSaver`` makes takes a connection through :meth:`KeelPool.connection`, so this
one place turns the pool's ``PoolTimeout`` and psycopg's ``OperationalError`` (a server that went
away, a connection cut in the middle of a query) into :class:`keel.errors.StoreUnavailable`,
naming ``KEEL_POSTGRES_URL``, for every path: a run, a resume, ``show``, ``history``, a fork.
Imported only when Postgres is configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from keel.errors import StoreUnavailable


class KeelPool(ConnectionPool[Any]):
    """A ``ConnectionPool`` whose failures name the setting (``setting``: what to show).

    Example:
        >>> pool = KeelPool(url, setting="KEEL_POSTGRES_URL=postgresql://db/keel")  # doctest: +SKIP
    """

    def __init__(self, *args: Any, setting: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        try:
            with super().connection(timeout) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise StoreUnavailable(self.setting, reason) from err
