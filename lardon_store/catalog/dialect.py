"""The few statements that differ between the catalog's two dialects, SQLite and PostgreSQL.

Most statements are SQLAlchemy Core, which renders each dialect's SQL. The hot paths use the driver directly with
statements written once in SQLite's form, ``?`` placeholders included: ``driver_sql`` gives PostgreSQL's (psycopg's
``%s``). Whole columns are read as one text each (``ints_text``, ``texts_text``): ``group_concat`` on SQLite,
``string_agg`` on PostgreSQL, whose text cannot hold the NUL that separates strings on SQLite (``SEPARATOR`` there,
turned back into NUL by ``joined_texts``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

__all__ = ["driver_many", "driver_rows", "driver_sql", "ints_text", "is_sqlite", "joined_texts", "texts_text"]

SEPARATOR = "\x01"  # between strings in one PostgreSQL text (a NUL cannot be in one)


def is_sqlite(conn: Connection | bool) -> bool:
    """Whether ``conn`` is on SQLite (a bool says it directly)."""
    return conn if isinstance(conn, bool) else conn.dialect.name == "sqlite"


def driver_sql(conn: Connection, sql: str) -> str:
    """``sql``, written for SQLite's driver (``?`` placeholders), for this connection's driver."""
    return sql if is_sqlite(conn) else sql.replace("%", "%%").replace("?", "%s")


def driver_rows(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Iterable[tuple]:
    """The rows of ``sql`` (SQLite's form) as plain tuples from the driver's cursor, inside ``conn``'s transaction:
    a few times cheaper per row than SQLAlchemy's rows."""
    raw = conn.connection.driver_connection
    sql = driver_sql(conn, sql)
    try:
        if is_sqlite(conn):
            return raw.execute(sql, tuple(params))
        cursor = raw.cursor()
        cursor.execute(sql, tuple(params))
        return cursor
    except conn.dialect.loaded_dbapi.Error as exc:  # (as SQLAlchemy's own statements raise it)
        raise DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error) from exc


def driver_many(conn: Connection, sql: str, rows: list[tuple]) -> None:
    """``sql`` (SQLite's form) once per row, through the driver's executemany."""
    if rows:
        conn.exec_driver_sql(driver_sql(conn, sql), rows)


def ints_text(conn: Connection | bool, column: str) -> str:
    """The SQL of an aggregate joining the integers of ``column`` with commas."""
    return f"group_concat({column})" if is_sqlite(conn) else f"string_agg(({column})::text, ',')"


def texts_text(conn: Connection | bool, column: str) -> str:
    """The SQL of an aggregate joining the strings of ``column`` (see ``joined_texts``)."""
    return f"group_concat({column}, char(0))" if is_sqlite(conn) else f"string_agg({column}, chr(1))"


def joined_texts(conn: Connection, text: str | None) -> str | None:
    """A ``texts_text`` aggregate's value with NUL between its strings, as on SQLite (None stays None; a string
    that held the separator itself then splits wrongly, and the checks that follow refuse it)."""
    return text if text is None or is_sqlite(conn) else text.replace(SEPARATOR, "\0")
