"""The catalog's engine: one SQLAlchemy engine on ``catalog.sqlite``, read-only or writable.

SQLite specifics live here: the connection PRAGMAs (``busy_timeout``, ``foreign_keys``, WAL and ``synchronous=NORMAL``
for writers), ``mode=ro`` URIs for readers, and the explicit ``BEGIN`` that makes every transaction (DDL included)
atomic and every read see one snapshot.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DatabaseError
from sqlalchemy.pool import NullPool

from ..errors import CorruptStoreError, IncompatibleSchemaError, StoreIOError
from ..format.layout import APPLICATION_ID, CATALOG_NAME

__all__ = [
    "catalog_path",
    "check_application_id",
    "check_no_foreign_tables",
    "checkpoint",
    "make_engine",
    "needs_immutable",
    "read_error",
    "read_errors",
]


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
            cur.execute("PRAGMA cache_size = -65536")  # 64 MB: a batch of 100,000 rows updates its indexes in memory
        cur.close()

    return setup


def make_engine(root: str | os.PathLike, readonly: bool, immutable: bool = False) -> Engine:
    """An engine on the store's catalog; read-only engines open the file with ``mode=ro`` and never write it, and
    ``immutable`` ones also skip SQLite's locking and WAL (for a catalog that nobody writes while it is open).

    Connections are not pooled across calls (NullPool), so nothing is shared with a forked child: each process
    opens its own sqlite3 connection when it needs one.
    """
    path = catalog_path(root).resolve()
    mode = "ro" if readonly else "rwc"
    uri = f"file:{path.as_posix()}?mode={mode}" + ("&immutable=1" if readonly and immutable else "")

    def creator() -> sqlite3.Connection:
        # isolation_level=None + an explicit BEGIN (below): the sqlite3 module would otherwise run DDL outside any
        # transaction (a kill in the middle of a migration would leave half a schema) and each SELECT in its own
        # snapshot.
        return sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False, isolation_level=None)

    engine = create_engine("sqlite://", creator=creator, poolclass=NullPool)
    event.listen(engine, "connect", _on_connect(readonly))
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    return engine


def needs_immutable(root: str | os.PathLike) -> bool:
    """Whether the catalog can only be read as immutable: it is in WAL mode, its ``-shm`` file is absent and cannot
    be created (a read-only mount, a folder this user cannot write), and its ``-wal`` is absent or empty (so nothing
    committed is outside the main file). StoreIOError when the ``-wal`` holds commits that cannot be read here."""
    path = catalog_path(root).resolve()
    try:
        con = sqlite3.connect(f"file:{path.as_posix()}?mode=ro", uri=True, timeout=10.0)
        try:
            con.execute("PRAGMA application_id").fetchone()
            return False
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "unable to open" not in str(exc):
            raise read_error(exc, path) from None
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreIOError(
            f"{path}: the catalog cannot be opened here: this folder is read-only and its -wal file holds commits "
            "that are not in the catalog file yet. Open the store once where it is writable (any lardon_store "
            "command does), or copy it with its -wal and -shm files."
        )
    return True


def read_error(exc: Exception, path: Path) -> Exception:
    """The library error for a SQLite error raised while opening or reading the catalog at ``path``."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).lower()
    if "not a database" in text or "encrypted" in text:
        return IncompatibleSchemaError(f"{path}: this file is not a lardon_store catalog ({orig}).")
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        return StoreIOError(
            f"{path}: the catalog cannot be opened ({orig}): check that the folder and file are readable; for a "
            "store on read-only media that nobody writes while it is open, use lardon_store.open(path, "
            "immutable=True)."
        )
    if "locked" in text or "busy" in text:
        return StoreIOError(f"{path}: the catalog stayed locked by a writer ({orig}): try again.")
    if "disk i/o" in text or "full" in text:
        return StoreIOError(f"{path}: reading the catalog failed ({orig}): the disk reported an I/O error.")
    return CorruptStoreError(f"{path}: the catalog cannot be read ({orig}): run `lardon-store verify`.")


@contextmanager
def read_errors(path: Path) -> Iterator[None]:
    """Turn the database errors raised inside the block into library errors naming the catalog (``read_error``)."""
    try:
        yield
    except DatabaseError as exc:
        raise read_error(exc, path) from None


def check_no_foreign_tables(conn: Connection, path: Path) -> None:
    """IncompatibleSchemaError when a database with no lardon_store revision holds tables: it belongs to another
    program, and creating the catalog's tables in it would change that program's file."""
    names = [n for (n,) in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")]
    foreign = sorted(n for n in names if n != "alembic_version" and not n.startswith("sqlite_"))
    if foreign:
        raise IncompatibleSchemaError(
            f"{path}: this SQLite file belongs to another program (tables {', '.join(foreign[:5])}): lardon_store "
            "leaves it untouched; compile into another folder."
        )


def check_application_id(conn: Connection, path: Path) -> None:
    """IncompatibleSchemaError unless the database on ``conn`` is a lardon_store catalog (or still empty)."""
    # Read through SQLite, never with open(): closing any descriptor of the catalog would drop the locks that this
    # process's SQLite connections hold on it (POSIX locks are per process), letting a writer reset the WAL under them.
    try:
        app_id = conn.exec_driver_sql("PRAGMA application_id").scalar()
    except DatabaseError as exc:
        raise read_error(exc, path) from None
    if app_id not in (APPLICATION_ID, 0):
        raise IncompatibleSchemaError(f"{path}: this file is not a lardon_store catalog (application_id {app_id}).")


def checkpoint(engine: Engine) -> None:
    """Copy every committed page of the WAL into the catalog file and empty the WAL, so that the main file alone is
    complete (a copy without ``-wal``/``-shm``, or a read-only mount, sees every commit). Best effort: a reader in
    the middle of a transaction makes SQLite leave the rest for the next checkpoint."""
    raw = engine.raw_connection()  # (outside any transaction: a checkpoint cannot run inside one)
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        raw.close()
