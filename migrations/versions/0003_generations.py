"""generations and versioned entry rows

Every committing write now makes a generation (a row of ``generations``). An entry row lives from the generation
that added it (``born``) until the one that removed it (``died``, NULL while live): removing or replacing an entry
keeps its row. Each generation has a random token, so that two histories that share a number (a catalog restored
from a backup, then written again) never look alike. Keys are unique among live rows only (a partial unique index),
entry ids are assigned from ``store_info.next_entry_id`` and never reused, and removing a source no longer deletes
its entries' rows (the foreign key sets ``source_id`` to NULL instead). ``store_info`` gains the store's id (a
UUID), ``next_entry_id`` and ``oldest_generation`` (the oldest generation gc kept). Existing entries live from
generation 1.

SQLite cannot drop a column constraint, so ``entries`` and ``meta_values`` are rebuilt: new tables, rows copied,
old tables dropped (the child first, so that no foreign-key action fires), new tables renamed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COPIED = 'id, key, source_id, shard_id, "offset", nbytes, dtype, shape, checksum, metadata'


def _entries_table(name: str, versioned: bool) -> None:
    columns = [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=not versioned),
        sa.Column("key", sa.String(), nullable=False, unique=not versioned),
        sa.Column(
            "source_id",
            sa.Integer(),
            sa.ForeignKey("sources.id", ondelete="SET NULL" if versioned else "CASCADE"),
            nullable=True,
        ),
        sa.Column("shard_id", sa.Integer(), sa.ForeignKey("shards.id"), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("dtype", sa.String(), nullable=False),
        sa.Column("shape", sa.String(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
    ]
    if versioned:
        columns += [sa.Column("born", sa.Integer(), nullable=False), sa.Column("died", sa.Integer(), nullable=True)]
    op.create_table(name, *columns)


def _meta_values_table(name: str, parent: str) -> None:
    op.create_table(
        name,
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey(f"{parent}.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("num", sa.Float(), nullable=True),
        sa.Column("text", sa.String(), nullable=True),
    )


def _swap(versioned: bool, copy_entries: str) -> None:
    _entries_table("entries_next", versioned)
    _meta_values_table("meta_values_next", "entries_next")
    op.execute(copy_entries)
    op.execute(
        "INSERT INTO meta_values_next (entry_id, key, type, num, text) SELECT m.entry_id, m.key, m.type, m.num, "
        "m.text FROM meta_values m JOIN entries_next e ON e.id = m.entry_id"
    )
    op.drop_table("meta_values")
    op.drop_table("entries")
    op.rename_table("entries_next", "entries")
    op.rename_table("meta_values_next", "meta_values")
    op.create_index("ix_entries_source_id", "entries", ["source_id"])
    op.create_index("ix_entries_shard_id", "entries", ["shard_id"])
    if versioned:
        op.create_index("ix_entries_key", "entries", ["key"])
        op.create_index(
            "ix_entries_live_key",
            "entries",
            ["key"],
            unique=True,
            sqlite_where=sa.text("died IS NULL"),
            postgresql_where=sa.text("died IS NULL"),
        )
    op.create_index("ix_meta_values_key_num_entry", "meta_values", ["key", "num", "type", "entry_id"])
    op.create_index("ix_meta_values_key_text_entry", "meta_values", ["key", "text", "entry_id"])
    op.create_index("ix_meta_values_key_type", "meta_values", ["key", "type"])


def upgrade() -> None:
    op.create_table(
        "generations",
        sa.Column("generation", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.Column("operation", sa.String(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(), nullable=False),
    )
    _swap(True, f"INSERT INTO entries_next ({_COPIED}, born, died) SELECT {_COPIED}, 1, NULL FROM entries")
    bind = op.get_bind()
    count, top = bind.execute(sa.text("SELECT count(*), coalesce(max(id), 0) FROM entries")).one()
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    op.execute(
        sa.text(
            "INSERT INTO generations (generation, created_at, operation, added, removed, token) "
            "VALUES (1, :now, :operation, :count, 0, :token)"
        ).bindparams(now=now, operation="migrate" if count else "create", count=count, token=uuid.uuid4().hex)
    )
    info = sa.table("store_info", sa.column("key", sa.String()), sa.column("value", sa.Text()))
    op.bulk_insert(
        info,
        [
            {"key": "store_id", "value": uuid.uuid4().hex},
            {"key": "next_entry_id", "value": str(top + 1)},
            {"key": "oldest_generation", "value": "1"},
        ],
    )


def downgrade() -> None:
    _swap(False, f"INSERT INTO entries_next ({_COPIED}) SELECT {_COPIED} FROM entries WHERE died IS NULL")
    op.execute("DELETE FROM store_info WHERE key IN ('store_id', 'next_entry_id', 'oldest_generation')")
    op.drop_table("generations")
