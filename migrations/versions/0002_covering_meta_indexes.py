"""covering meta_values indexes: (key, num, type, entry_id) and (key, text, entry_id)

A filter on a key then reads entry ids (and the type test of a numeric range) straight from the index, without
a table look-up per match.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_meta_values_key_num_entry", "meta_values", ["key", "num", "type", "entry_id"])
    op.create_index("ix_meta_values_key_text_entry", "meta_values", ["key", "text", "entry_id"])
    op.drop_index("ix_meta_values_key_num", table_name="meta_values")
    op.drop_index("ix_meta_values_key_text", table_name="meta_values")


def downgrade() -> None:
    op.create_index("ix_meta_values_key_num", "meta_values", ["key", "num"])
    op.create_index("ix_meta_values_key_text", "meta_values", ["key", "text"])
    op.drop_index("ix_meta_values_key_num_entry", table_name="meta_values")
    op.drop_index("ix_meta_values_key_text_entry", table_name="meta_values")
