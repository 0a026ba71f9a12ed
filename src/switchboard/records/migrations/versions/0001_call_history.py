"""Call history and webhook dead letters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from switchboard.records.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(200), primary_key=True),
        sa.Column("call_sid", sa.String(100)),
        sa.Column("from_number", sa.String(64)),
        sa.Column("to_number", sa.String(64)),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("ingress", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("failure_reason", sa.Text()),
        sa.Column("recording", sa.JSON()),
        sa.Column("transcript", sa.JSON(), nullable=False),
        sa.Column("turns", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("intents", sa.JSON(), nullable=False),
        sa.Column("tool_calls", sa.JSON(), nullable=False),
        sa.Column("provider_fallbacks", sa.JSON(), nullable=False),
        sa.Column("saved_at", UTCDateTime(), nullable=False),
    )
    for column in ("call_sid", "from_number", "to_number", "agent", "started_at", "outcome"):
        op.create_index(f"ix_calls_{column}", "calls", [column])
    op.create_table(
        "webhook_dead_letters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_webhook_dead_letters_call_id", "webhook_dead_letters", ["call_id"])


def downgrade() -> None:
    op.drop_table("webhook_dead_letters")
    op.drop_table("calls")
