"""CreateAgent remembers the request id it was given, so that a retry gets the same agent.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    """Add `request_id`, unique per tenant when given (NULLs never collide)."""
    op.add_column("saved_agents", sa.Column("request_id", sa.String(64), nullable=True))
    op.create_index(
        "uq_saved_agents_request", "saved_agents", ["tenant", "request_id"], unique=True
    )


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("uq_saved_agents_request", "saved_agents")
    op.drop_column("saved_agents", "request_id")
