"""Saved agents name their own model and sampling settings.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Add `model` (empty: the server's model), `temperature` and `max_output_tokens`."""
    op.add_column(
        "saved_agents",
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
    )
    op.add_column("saved_agents", sa.Column("temperature", sa.Float, nullable=True))
    op.add_column("saved_agents", sa.Column("max_output_tokens", sa.Integer, nullable=True))


def downgrade() -> None:
    """Drop the three columns."""
    for column in ("max_output_tokens", "temperature", "model"):
        op.drop_column("saved_agents", column)
