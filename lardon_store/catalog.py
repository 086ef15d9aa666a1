"""The SQLite catalog: SQLAlchemy tables and the engine factory.

The tables are plain and documented (see README, "The catalog") so that a user can read a store with ``sqlite3`` or
pandas. They are created and changed only by the Alembic revisions in ``migrations/``; this module describes the
current head so that the code and the migrations can be compared (a test does).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.pool import NullPool

CATALOG_NAME = "catalog.sqlite"
BLOBS_DIR = "blobs"
# PRAGMA application_id: "LRDN", so `file` and other tools can tell a lardon_store catalog.
APPLICATION_ID = 0x4C52444E

metadata = MetaData()

store_info = Table(
    "store_info",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", String, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("content_hash", String, nullable=True),
    Column("callback_version", String, nullable=False),
    Column("status", String, nullable=False),
    Column("error", Text, nullable=True),
)

shards = Table(
    "shards",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", String, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String, nullable=False, unique=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="CASCADE"), nullable=True, index=True),
    Column("shard_id", Integer, ForeignKey("shards.id"), nullable=False, index=True),
    Column("offset", BigInteger, nullable=False),
    Column("nbytes", BigInteger, nullable=False),
    Column("dtype", String, nullable=False),
    Column("shape", String, nullable=False),
    Column("checksum", String, nullable=False),
    Column("metadata", Text, nullable=False),
)

# One row per scalar metadata value, so that filters run on B-tree indexes: `num` holds ints and floats, `text`
# strings; `type` is one of 'int', 'float', 'bool', 'str', 'null' (bools are stored in `num` as 0/1).
meta_values = Table(
    "meta_values",
    metadata,
    Column("entry_id", Integer, ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String, primary_key=True),
    Column("type", String, nullable=False),
    Column("num", Float, nullable=True),
    Column("text", String, nullable=True),
    # Covering: a filter on one key reads the matching entry ids (and types) from the index alone.
    Index("ix_meta_values_key_num_entry", "key", "num", "type", "entry_id"),
    Index("ix_meta_values_key_text_entry", "key", "text", "entry_id"),
    Index("ix_meta_values_key_type", "key", "type"),
)


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
