"""Records become views of the call log: who ended the call, its transfer, typed events.

Adds ``ended_by`` and ``transfer``, and rewrites the events of calls stored before it
(``{"type", "t", "data"}``: keypad presses and barge-ins) as call-log events
(``{"event", "at_s", ...}``, see ``switchboard.call_log``).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_calls = sa.table(
    "calls", sa.column("call_id", sa.String), sa.column("events", sa.JSON)
)


def as_log_event(old: dict[str, Any]) -> dict[str, Any]:
    """A stored event of record version 1 as a call-log event (already one: unchanged)."""
    if "event" in old:
        return old
    data = old.get("data") or {}
    kind = old.get("type")
    at_s = max(0.0, float(old.get("t") or 0))
    if kind == "keypad":
        return {"event": "keypad", "at_s": at_s, "digit": str(data.get("digit", "")), "intent": None}
    return {"event": "interrupted", "at_s": at_s}  # version 1 stored only keypad and interrupted


def as_old_event(new: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in new.items() if k not in ("event", "at_s")}
    return {"type": new.get("event", ""), "t": new.get("at_s", 0.0), "data": fields}


def _rewrite(convert) -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(_calls.c.call_id, _calls.c.events)).all()
    for call_id, events in rows:
        converted = [convert(e) for e in events or [] if isinstance(e, dict)]
        if converted != events:
            connection.execute(
                _calls.update().where(_calls.c.call_id == call_id).values(events=converted)
            )


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("ended_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("transfer", sa.JSON(), nullable=True))
    _rewrite(as_log_event)


def downgrade() -> None:
    _rewrite(as_old_event)
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("transfer")
        batch.drop_column("ended_by")
