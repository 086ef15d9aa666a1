"""Where a store's catalog is, and its engine: SQLite in the store folder (the default) or a PostgreSQL database.

Location
--------
A store's catalog is ``catalog.sqlite`` in its folder unless the folder holds ``catalog.url`` (``CATALOG_URL_NAME``):
one line, the SQLAlchemy URL of a PostgreSQL database (``postgresql+psycopg://user@host/dbname``), written without
any password (passwords come from libpq's usual places: ``PGPASSWORD``, ``~/.pgpass``, a service file). A store owns
its whole database: one store per database. ``locate`` reads it; an explicit ``catalog=`` URL, then the environment
variable ``LARDON_STORE_CATALOG`` (``CATALOG_ENV``), override what the folder says.

Engines
-------
SQLite specifics live here: the connection PRAGMAs (``busy_timeout``, ``foreign_keys``, WAL and
``synchronous=NORMAL`` for writers), ``mode=ro`` URIs for readers, and the explicit ``BEGIN`` that makes every
transaction (DDL included) atomic and every read see one snapshot. PostgreSQL engines keep a small pool per process
(made anew after ``fork`` by the handle); read-only ones set ``default_transaction_read_only``. The one writer of a
PostgreSQL catalog holds a session advisory lock (``catalog_lock``), which the server releases when the session ends,
so a killed writer frees it.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, InterfaceError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.pool import NullPool

from ..errors import CorruptStoreError, IncompatibleSchemaError, LardonStoreError, StoreIOError, StoreLockedError
from ..format.layout import APPLICATION_ID, CATALOG_NAME, CATALOG_URL_NAME

__all__ = [
    "CATALOG_ENV",
    "LOCK_KEY",
    "CatalogLocation",
    "catalog_lock",
    "catalog_path",
    "check_application_id",
    "check_no_foreign_tables",
    "checkpoint",
    "dispose_engines",
    "locate",
    "make_engine",
    "needs_immutable",
    "read_error",
    "read_errors",
    "record_location",
]

CATALOG_ENV = "LARDON_STORE_CATALOG"
_ENGINES: dict[tuple[str, bool, int], Engine] = {}  # PostgreSQL engines by (URL, read-only, process)
_ENGINES_LOCK = threading.Lock()


def _forget_parent_engines() -> None:
    """(In a forked child.) Drop the parent's PostgreSQL engines without closing their connections: those belong
    to the parent, and closing one from here would end the parent's session."""
    global _ENGINES_LOCK
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()
    _ENGINES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent_engines)


def dispose_engines() -> None:
    """Close this process's pooled PostgreSQL connections, to every catalog (a later use connects again): for a
    program done with its stores, or about to drop a catalog's database (which would otherwise have to end the
    sessions this process keeps open)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.dispose()


LOCK_KEY = 0x4C52444E  # the advisory lock of a PostgreSQL catalog's one writer ("LRDN")
_DEAD_HOLDER_SECONDS = 1.0  # how long a refused lock is asked for again before StoreLockedError


def catalog_path(root: str | os.PathLike) -> Path:
    """The SQLite catalog file of the store at ``root``."""
    return Path(root) / CATALOG_NAME


@dataclass(frozen=True, slots=True)
class CatalogLocation:
    """Where the catalog of the store at ``root`` is: its SQLite file (``url`` None) or a PostgreSQL URL."""

    root: Path
    url: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.url is None

    @property
    def path(self) -> Path:
        """The SQLite file (for a PostgreSQL catalog: where it would be)."""
        return catalog_path(self.root)

    @property
    def host(self) -> str:
        """The PostgreSQL server, as messages name it (its host, or its socket folder)."""
        u = make_url(self.url)
        host = u.host or u.query.get("host") or "localhost"
        return f"{host if isinstance(host, str) else host[0]}:{u.port or u.query.get('port') or 5432}"

    def __str__(self) -> str:
        return str(self.path) if self.url is None else without_password(self.url)


def without_password(url: str) -> str:
    """``url`` with any password removed (what the store folder records and what messages show)."""
    u = make_url(url)
    return URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query).render_as_string(
        hide_password=False
    )


def _check_url(url: str, where: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise LardonStoreError(f"{where}: {url!r} is not a database URL ({exc}).") from None
    if parsed.get_backend_name() != "postgresql":
        raise LardonStoreError(
            f"{where}: catalog URL {without_password(url)!r} is not PostgreSQL: give "
            "postgresql+psycopg://user@host/dbname, or no catalog for the SQLite file in the store folder."
        )
    if parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def locate(root: str | os.PathLike, catalog: str | None = None) -> CatalogLocation:
    """Where the catalog of the store at ``root`` is: ``catalog`` when given, else ``$LARDON_STORE_CATALOG``, else
    the URL in the folder's ``catalog.url``, else its ``catalog.sqlite``."""
    root = Path(root).absolute()
    url = catalog or os.environ.get(CATALOG_ENV) or None
    if url is None:
        try:
            url = (root / CATALOG_URL_NAME).read_text().strip() or None
        except FileNotFoundError:
            url = None
        except OSError as exc:
            raise StoreIOError(f"{root / CATALOG_URL_NAME}: cannot read where the catalog is ({exc}).") from None
    return CatalogLocation(root, None if url is None else _check_url(url, str(root)))


def record_location(location: CatalogLocation) -> None:
    """Write the folder's ``catalog.url`` (without password) for a PostgreSQL catalog, atomically."""
    if location.url is None:
        return
    location.root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=location.root, prefix=".catalog-url-")
    with os.fdopen(fd, "w") as f:
        f.write(without_password(location.url) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, location.root / CATALOG_URL_NAME)


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


def make_engine(location: CatalogLocation, readonly: bool, immutable: bool = False) -> Engine:
    """An engine on the store's catalog; read-only engines never write it (SQLite: ``mode=ro``; PostgreSQL:
    read-only transactions), and ``immutable`` ones also skip SQLite's locking and WAL (for a catalog that nobody
    writes while it is open).

    SQLite connections are not pooled across calls (NullPool), so nothing is shared with a forked child: each
    process opens its own sqlite3 connection when it needs one. A PostgreSQL engine is shared by every handle of the
    same catalog and mode in a process, its connections pooled: one kept open (up to four more while several threads
    query at once); a forked child gets engines of its own.
    """
    if location.url is not None:
        key = (location.url, readonly, os.getpid())
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                args = {"connect_timeout": 10, "application_name": "lardon_store"}
                if readonly:
                    args["options"] = "-c default_transaction_read_only=on"
                # REPEATABLE READ: every statement of a transaction sees the one snapshot its first statement saw
                # (as SQLite's read transactions do), so shard sizes and the rows that point into them agree.
                engine = _ENGINES[key] = create_engine(
                    location.url, pool_size=1, max_overflow=4, connect_args=args, isolation_level="REPEATABLE READ"
                )
        return engine
    path = location.path.resolve()
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


def needs_immutable(location: CatalogLocation) -> bool:
    """Whether the catalog can only be read as immutable: it is in WAL mode, its ``-shm`` file is absent and cannot
    be created (a read-only mount, a folder this user cannot write), and its ``-wal`` is absent or empty (so nothing
    committed is outside the main file). StoreIOError when the ``-wal`` holds commits that cannot be read here.
    Never for a PostgreSQL catalog."""
    if location.url is not None:
        return False
    path = location.path.resolve()
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


_UNREACHABLE = ("could not connect", "connection refused", "connection failed", "timeout expired", "no such file",
                "could not translate host", "server closed the connection", "terminating connection")  # fmt: skip


def read_error(exc: Exception, path: Path | CatalogLocation) -> Exception:
    """The library error for a database error raised while opening or reading the catalog at ``path``."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).lower()
    if isinstance(path, CatalogLocation) and path.url is not None:
        if any(t in text for t in _UNREACHABLE) or isinstance(exc, InterfaceError):
            recorded = (path.root / CATALOG_URL_NAME).is_file() and not os.environ.get(CATALOG_ENV)
            where = f"the URL in {path.root / CATALOG_URL_NAME}" if recorded else "the catalog URL you gave"
            return StoreIOError(
                f"{path.root}: its catalog server {path.host} cannot be reached ({str(orig).strip()}): start it or "
                f"check {where} (catalog=URL or ${CATALOG_ENV} override the folder's)."
            )
        if 'database "' in text and "does not exist" in text:
            return StoreIOError(f"{path}: the catalog's database does not exist ({str(orig).strip()}).")
        if "password authentication failed" in text or "no password supplied" in text:
            return StoreIOError(
                f"{path}: the catalog server refused the login ({str(orig).strip()}): give the password in "
                "PGPASSWORD, ~/.pgpass or a service file (the store folder never records one)."
            )
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
def read_errors(path: Path | CatalogLocation) -> Iterator[None]:
    """Turn the database errors raised inside the block into library errors naming the catalog (``read_error``)."""
    try:
        yield
    except (DatabaseError, InterfaceError) as exc:
        raise read_error(exc, path) from None


def check_no_foreign_tables(conn: Connection, path: Path | CatalogLocation) -> None:
    """IncompatibleSchemaError when a database with no lardon_store revision holds tables: it belongs to another
    program, and creating the catalog's tables in it would change that program's file."""
    if conn.dialect.name == "sqlite":
        names = [n for (n,) in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")]
        what = "SQLite file"
    else:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        names, what = [n for (n,) in conn.exec_driver_sql(query)], "database"
    foreign = sorted(n for n in names if n != "alembic_version" and not n.startswith("sqlite_"))
    if foreign:
        raise IncompatibleSchemaError(
            f"{path}: this {what} belongs to another program (tables {', '.join(foreign[:5])}): lardon_store "
            "leaves it untouched; compile into another folder (or another database)."
        )


def check_application_id(conn: Connection, path: Path | CatalogLocation) -> None:
    """IncompatibleSchemaError unless the SQLite database on ``conn`` is a lardon_store catalog (or still empty);
    nothing to check on PostgreSQL."""
    if conn.dialect.name != "sqlite":
        return
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
    the middle of a transaction makes SQLite leave the rest for the next checkpoint. On PostgreSQL: ``ANALYZE``,
    so that the planner knows the rows just written (a 1 % query took 12 s instead of 0.1 s on 200,000 entries
    written a moment before, while autovacuum had not analyzed them yet)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        return
    raw = engine.raw_connection()  # (outside any transaction: a checkpoint cannot run inside one)
    try:
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        raw.close()


def catalog_lock(engine: Engine, location: CatalogLocation):
    """A context holding the single-writer lock of a PostgreSQL catalog (a session advisory lock, freed by the
    server when the holder's session ends, a killed writer included); StoreLockedError if another session still
    holds it after a second (the server ends a killed holder's session within milliseconds, not at once). A no-op
    for SQLite, whose writers hold the store folder's ``write.lock`` (``io.lock``)."""
    if location.url is None:
        return nullcontext()
    return _advisory_lock(engine, location)


@contextmanager
def _advisory_lock(engine: Engine, location: CatalogLocation) -> Iterator[None]:
    try:
        conn = engine.connect()
        deadline = time.monotonic() + _DEAD_HOLDER_SECONDS
        while True:
            held = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({LOCK_KEY})").scalar()
            conn.commit()
            if held or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # (a holder killed a moment ago: its server process has yet to see the socket close)
    except (SAOperationalError, InterfaceError) as exc:
        raise read_error(exc, location) from None
    try:
        if not held:
            raise StoreLockedError(
                f"{location.root}: another process is writing to this store (compile, gc or a parser; it holds the "
                f"catalog's lock on {location.host}); wait for it to finish."
            )
        yield
    finally:
        try:
            if held:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({LOCK_KEY})")
                conn.commit()
        finally:
            conn.close()
