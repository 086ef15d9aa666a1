"""initial catalog: store_info, sources, shards, entries, meta_values

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_info",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "path", sa.String().with_variant(sa.String(collation="C"), "postgresql"), nullable=False, unique=True
        ),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=True),
        sa.Column("callback_version", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "shards",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.String(), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(), nullable=False, unique=True),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id", ondelete="CASCADE"), nullable=True),
        sa.Column("shard_id", sa.Integer(), sa.ForeignKey("shards.id"), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("dtype", sa.String(), nullable=False),
        sa.Column("shape", sa.String(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
    )
    op.create_index("ix_entries_source_id", "entries", ["source_id"])
    op.create_index("ix_entries_shard_id", "entries", ["shard_id"])
    op.create_table(
        "meta_values",
        sa.Column("entry_id", sa.Integer(), sa.ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("num", sa.Float(), nullable=True),
        sa.Column("text", sa.String(), nullable=True),
    )
    op.create_index("ix_meta_values_key_num", "meta_values", ["key", "num"])
    op.create_index("ix_meta_values_key_text", "meta_values", ["key", "text"])
    op.create_index("ix_meta_values_key_type", "meta_values", ["key", "type"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA application_id = 1280459854")


def downgrade() -> None:
    op.drop_table("meta_values")
    op.drop_table("entries")
    op.drop_table("shards")
    op.drop_table("sources")
    op.drop_table("store_info")
