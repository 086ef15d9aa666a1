"""The catalog's tables, as SQLAlchemy Core ``Table`` objects.

The tables are plain and documented (see README, "The catalog") so that a user can read a store with ``sqlite3`` or
pandas. They are created and changed only by the Alembic revisions in ``migrations/``; this module describes the
current head so that the code and the migrations can be compared (a test does).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = ["arrays", "entries", "generations", "meta_values", "metadata", "shards", "sources", "store_info"]

metadata = MetaData()

# Text that queries compare or sort: by code point on PostgreSQL too (COLLATE "C"), as SQLite's BINARY does.
CodePoint = String().with_variant(String(collation="C"), "postgresql")

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
    Column("path", CodePoint, nullable=False, unique=True),
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

# One row per committing write: compile batch, gc, parser block, legacy import, migration.
generations = Table(
    "generations",
    metadata,
    Column("generation", Integer, primary_key=True, autoincrement=False),
    Column("created_at", String, nullable=False),  # ISO 8601, UTC
    Column("operation", String, nullable=False),
    Column("added", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("token", String, nullable=False),  # random: tells apart two histories that share a generation number
)

# Versioned: a row lives from generation `born` until `died` (NULL while live); its content never changes. Ids come
# from store_info.next_entry_id and are never reused.
entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("key", CodePoint, nullable=False, index=True),
    Column("source_id", Integer, ForeignKey("sources.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("metadata", Text, nullable=False),
    Column("born", Integer, nullable=False),
    Column("died", Integer, nullable=True),  # (no index: NULL for nearly every row, it would only mislead the planner)
    Index(
        "ix_entries_live_key",
        "key",
        unique=True,
        sqlite_where=text("died IS NULL"),
        postgresql_where=text("died IS NULL"),
    ),
)

# One row per field of each entry (the field "" for a store of bare arrays): where its bytes are and what they are.
# Only gc changes a row, to move its bytes (shard_id, offset) to a new shard.
arrays = Table(
    "arrays",
    metadata,
    Column("entry_id", Integer, ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    Column("field", String, primary_key=True),
    Column("shard_id", Integer, ForeignKey("shards.id"), nullable=False, index=True),
    Column("offset", BigInteger, nullable=False),
    Column("nbytes", BigInteger, nullable=False),
    Column("dtype", String, nullable=False),
    Column("shape", String, nullable=False),
    Column("checksum", String, nullable=False),
)

# One row per scalar metadata value, so that filters run on B-tree indexes: `num` holds ints and floats, `text`
# strings; `type` is one of 'int', 'float', 'bool', 'str', 'null' (bools are stored in `num` as 0/1).
meta_values = Table(
    "meta_values",
    metadata,
    Column("entry_id", Integer, ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    Column("key", CodePoint, primary_key=True),
    Column("type", String, nullable=False),
    Column("num", Float, nullable=True),
    Column("text", CodePoint, nullable=True),
    # Covering: a filter on one key reads the matching entry ids (and types) from the index alone.
    Index("ix_meta_values_key_num_entry", "key", "num", "type", "entry_id"),
    Index("ix_meta_values_key_text_entry", "key", "text", "entry_id"),
    Index("ix_meta_values_key_type", "key", "type"),
)
