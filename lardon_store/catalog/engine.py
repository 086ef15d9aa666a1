"""The catalog's engine: one SQLAlchemy engine on ``catalog.sqlite``, read-only or writable.

SQLite specifics live here: the connection PRAGMAs (``busy_timeout``, ``foreign_keys``, WAL and ``synchronous=NORMAL``
for writers), ``mode=ro`` URIs for readers, and the explicit ``BEGIN`` that makes every transaction (DDL included)
atomic and every read see one snapshot.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DatabaseError
from sqlalchemy.pool import NullPool

from ..errors import IncompatibleSchemaError
from ..format.layout import APPLICATION_ID, CATALOG_NAME

__all__ = ["catalog_path", "check_application_id", "make_engine"]


def catalog_path(root: str | os.PathLike) -> Path:
    """The catalog file of the store at ``root``."""
    return Path(root) / CATALOG_NAME


def _on_connect(readonly: bool):
    def setup(dbapi_conn: sqlite3.Connection, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 10000")
        cur.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    return setup


def make_engine(root: str | os.PathLike, readonly: bool) -> Engine:
    """An engine on the store's catalog; read-only engines open the file with ``mode=ro`` and never write it.

    Connections are not pooled across calls (NullPool), so nothing is shared with a forked child: each process
    opens its own sqlite3 connection when it needs one.
    """
    path = catalog_path(root).resolve()
    mode = "ro" if readonly else "rwc"
    uri = f"file:{path.as_posix()}?mode={mode}"

    def creator() -> sqlite3.Connection:
        # isolation_level=None + an explicit BEGIN (below): the sqlite3 module would otherwise run DDL outside any
        # transaction (a kill in the middle of a migration would leave half a schema) and each SELECT in its own
        # snapshot.
        return sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False, isolation_level=None)

    engine = create_engine("sqlite://", creator=creator, poolclass=NullPool)
    event.listen(engine, "connect", _on_connect(readonly))
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    return engine


def check_application_id(conn: Connection, path: Path) -> None:
    """IncompatibleSchemaError unless the database on ``conn`` is a lardon_store catalog (or still empty)."""
    # Read through SQLite, never with open(): closing any descriptor of the catalog would drop the locks that this
    # process's SQLite connections hold on it (POSIX locks are per process), letting a writer reset the WAL under them.
    try:
        app_id = conn.exec_driver_sql("PRAGMA application_id").scalar()
    except DatabaseError as exc:
        raise IncompatibleSchemaError(f"{path}: this file is not a lardon_store catalog ({exc.orig}).") from None
    if app_id not in (APPLICATION_ID, 0):
        raise IncompatibleSchemaError(f"{path}: this file is not a lardon_store catalog (application_id {app_id}).")
