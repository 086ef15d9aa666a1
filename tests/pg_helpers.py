"""PostgreSQL for the tests: databases on the server that ``.ci/run`` starts (``LARDON_STORE_TEST_PG``).

``--catalog-backend postgresql`` runs the whole suite with every store a test creates without naming a catalog put
in a fresh PostgreSQL database (``conftest.py`` patches where new stores' catalogs go); tests that read or craft
``catalog.sqlite`` itself are marked ``sqlite_only``. Tests of PostgreSQL itself use the ``pg_url`` fixture.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.pool import NullPool

SERVER_ENV = "LARDON_STORE_TEST_PG"
BACKEND = "sqlite"  # the run's --catalog-backend (set by conftest.py)


def server_url() -> str | None:
    """The URL of the test server's maintenance database, or None when no server was started."""
    return os.environ.get(SERVER_ENV) or None


def require_server() -> str:
    url = server_url()
    if url is None:
        pytest.skip(f"no PostgreSQL server: .ci/run starts one and sets {SERVER_ENV}")
    return url


def _admin(url: str):
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def create_database(prefix: str = "t") -> str:
    """A new empty database on the test server; its URL."""
    url = require_server()
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    engine = _admin(url)
    with engine.connect() as conn:
        # (Copying the template's files is about twice as fast as WAL-logging them, on a test server without fsync.)
        strategy = " STRATEGY = FILE_COPY" if conn.dialect.server_version_info >= (15,) else ""
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{strategy}')
    engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_databases(urls: list[str]) -> None:
    """Drop the test databases (their open sessions are ended: a store object may still hold one)."""
    if not urls:
        return
    from lardon_store.catalog.engine import dispose_engines

    dispose_engines()  # (ending this process's own sessions first: FORCE waits about 100 ms for each one it ends)
    engine = _admin(require_server())
    with engine.connect() as conn:
        for url in urls:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
    engine.dispose()


def catalog_sql(root, sql: str, params: tuple = (), write: bool = False) -> list[tuple]:
    """Run ``sql`` (SQLite's form, ``?`` placeholders) on the catalog of the store at ``root``, SQLite or
    PostgreSQL, as another program would (``write``: in a transaction that commits); the rows it returns."""
    from lardon_store.catalog.dialect import driver_sql
    from lardon_store.catalog.engine import locate, make_engine

    engine = make_engine(locate(root), readonly=not write)
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(driver_sql(conn, sql), params)
            return [tuple(r) for r in result] if result.returns_rows else [(result.rowcount,)]
    finally:
        engine.dispose()
