"""fields: an entry's arrays move to their own table, one row per field

An entry (key, source, metadata, generations) now owns one ``arrays`` row per field: field name, shard, offset,
nbytes, dtype, shape and checksum. Existing entries get one row for the unnamed field ``""``, with the values they
had, so that a store of bare arrays reads exactly as before. The store's field list and alignment spec go in
``store_info`` (``fields``, ``align``) when first written.

SQLite cannot drop a column that a foreign key or an index uses, so ``entries`` and ``meta_values`` are rebuilt as
in revision 0003: new tables, rows copied, old tables dropped (the child first, so that no foreign-key action
fires), new tables renamed (SQLite renames the foreign keys that point at them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ARRAY = 'shard_id, "offset", nbytes, dtype, shape, checksum'
# Text compared or sorted in queries orders by code point on PostgreSQL too, as SQLite's BINARY does.
_CODE_POINT = sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _array_columns() -> list[sa.Column]:
    return [
        sa.Column("shard_id", sa.Integer(), sa.ForeignKey("shards.id"), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("dtype", sa.String(), nullable=False),
        sa.Column("shape", sa.String(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
    ]


def _entries_table(name: str, with_arrays: bool) -> None:
    columns = [
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("key", _CODE_POINT, nullable=False),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id", ondelete="SET NULL"), nullable=True),
    ]
    if with_arrays:
        columns += _array_columns()
    columns += [
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("born", sa.Integer(), nullable=False),
        sa.Column("died", sa.Integer(), nullable=True),
    ]
    op.create_table(name, *columns)


def _swap(with_arrays: bool, copy_entries: str, copy_arrays: str | None) -> None:
    _entries_table("entries_next", with_arrays)
    op.create_table(
        "meta_values_next",
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey("entries_next.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", _CODE_POINT, primary_key=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("num", sa.Float(), nullable=True),
        sa.Column("text", _CODE_POINT, nullable=True),
    )
    op.execute(copy_entries)
    op.execute(
        "INSERT INTO meta_values_next (entry_id, key, type, num, text) SELECT entry_id, key, type, num, text "
        "FROM meta_values"
    )
    if copy_arrays is not None:
        op.create_table(
            "arrays",
            sa.Column("entry_id", sa.Integer(), sa.ForeignKey("entries_next.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("field", sa.String(), primary_key=True),
            *_array_columns(),
        )
        op.execute(copy_arrays)
    else:
        op.drop_table("arrays")
    op.drop_table("meta_values")
    op.drop_table("entries")
    op.rename_table("entries_next", "entries")
    op.rename_table("meta_values_next", "meta_values")
    op.create_index("ix_entries_source_id", "entries", ["source_id"])
    op.create_index("ix_entries_key", "entries", ["key"])
    op.create_index(
        "ix_entries_live_key",
        "entries",
        ["key"],
        unique=True,
        sqlite_where=sa.text("died IS NULL"),
        postgresql_where=sa.text("died IS NULL"),
    )
    if with_arrays:
        op.create_index("ix_entries_shard_id", "entries", ["shard_id"])
    else:
        op.create_index("ix_arrays_shard_id", "arrays", ["shard_id"])
    op.create_index("ix_meta_values_key_num_entry", "meta_values", ["key", "num", "type", "entry_id"])
    op.create_index("ix_meta_values_key_text_entry", "meta_values", ["key", "text", "entry_id"])
    op.create_index("ix_meta_values_key_type", "meta_values", ["key", "type"])


def upgrade() -> None:
    _swap(
        False,
        "INSERT INTO entries_next (id, key, source_id, metadata, born, died) "
        "SELECT id, key, source_id, metadata, born, died FROM entries",
        f"INSERT INTO arrays (entry_id, field, {_ARRAY}) SELECT id, '', {_ARRAY} FROM entries",
    )


def downgrade() -> None:
    bind = op.get_bind()
    named = bind.execute(sa.text("SELECT count(*) FROM arrays WHERE field != ''")).scalar()
    if named:
        raise RuntimeError(
            "this store's entries have named fields, which catalog revision 0003 cannot hold: downgrading would lose "
            "them. Compile the data again with a release before fields instead."
        )
    _swap(
        True,
        f"INSERT INTO entries_next (id, key, source_id, {_ARRAY}, metadata, born, died) "
        f"SELECT e.id, e.key, e.source_id, {', '.join('a.' + c for c in _ARRAY.split(', '))}, e.metadata, e.born, "
        "e.died FROM entries e JOIN arrays a ON a.entry_id = e.id AND a.field = ''",
        None,
    )
    op.execute("DELETE FROM store_info WHERE key IN ('fields', 'align')")
