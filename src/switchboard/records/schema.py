"""The call history's tables (SQLAlchemy 2); their migrations are in ``migrations/versions``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Index, Integer, String, Text, TypeDecorator, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timestamps stored in UTC and read back timezone-aware, in SQLite as in PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class CallRow(Base):
    """One finished call; written once, by the worker that ran it (upsert by ``call_id``)."""

    __tablename__ = "calls"

    call_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    call_sid: Mapped[str | None] = mapped_column(String(100), index=True)
    # The stream the row was last saved from: another stream of the call may only add to it.
    stream_sid: Mapped[str | None] = mapped_column(String(100))
    resumed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    from_number: Mapped[str | None] = mapped_column(String(64), index=True)
    to_number: Mapped[str | None] = mapped_column(String(64), index=True)
    agent: Mapped[str] = mapped_column(String(200), index=True)
    ingress: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(String(32), index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    recording: Mapped[dict | None] = mapped_column(JSON)
    transcript: Mapped[list] = mapped_column(JSON)
    turns: Mapped[list] = mapped_column(JSON)
    events: Mapped[list] = mapped_column(JSON)
    intents: Mapped[list] = mapped_column(JSON)
    tool_calls: Mapped[list] = mapped_column(JSON)
    provider_fallbacks: Mapped[list] = mapped_column(JSON)
    analysis: Mapped[dict | None] = mapped_column(JSON)
    saved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class DeadLetterRow(Base):
    """A post-call webhook that failed every attempt: its body, kept for replay."""

    __tablename__ = "webhook_dead_letters"
    __table_args__ = (Index("ix_webhook_dead_letters_call_id", "call_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
