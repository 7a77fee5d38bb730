"""The saved_agents table as it was first created (before migrations existed).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    """Create the table, its unique names and its listing order."""
    op.create_table(
        "saved_agents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("system_prompt", sa.Text, nullable=False),
        sa.Column("base_type", sa.String(32), nullable=False),
        sa.Column("tools", sa.JSON, nullable=False),
        sa.Column("repository", sa.String(200), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.UniqueConstraint("tenant", "repository", "name", name="uq_saved_agents_name"),
    )
    op.create_index("ix_saved_agents_order", "saved_agents", ["tenant", "create_time", "id"])


def downgrade() -> None:
    """Drop the table."""
    op.drop_table("saved_agents")
