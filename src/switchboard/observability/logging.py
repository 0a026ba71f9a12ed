"""Logging set-up: readable lines in development, JSON lines in production, call ids on both.

Every line logged while a call is being handled carries that call's id (``call_context``), so
``grep call-CA123`` or a log query on ``call_id`` follows one call from the orchestrator's
webhook to the worker that ran it. The id travels in a context variable, so tasks started
inside the context (Pipecat's pipeline tasks, ``asyncio.to_thread``) inherit it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC
from typing import TYPE_CHECKING, TextIO

from loguru import logger

from switchboard.privacy.logs import redact_debug_record

if TYPE_CHECKING:
    from loguru import Message

# Fields a JSON line always has; anything else bound with ``logger.bind``/``contextualize``
# is added beside them.
_BASE_FIELDS = ("ts", "level", "role", "message", "logger", "function", "line")
# A media stream's URL path carries its token (a credential while it is valid): uvicorn's
# connection lines show it redacted.
_STREAM_TOKEN = re.compile(r"(/twilio/media/)[A-Za-z0-9._~-]+")
# Faults of a client that uvicorn logs with a traceback although it handles them (the socket
# is closed with 1007 and the app counts it): one warning line instead.
_CLIENT_FAULTS = frozenset({"Invalid UTF-8 sequence received from client."})


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (uvicorn, httpx) through loguru so every line has one format."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = _STREAM_TOKEN.sub(r"\1<token>", record.getMessage())
        if message in _CLIENT_FAULTS:
            logger.opt(depth=6).warning(message)
            return
        logger.opt(depth=6, exception=record.exc_info).log(level, message)


_CALL_ID: ContextVar[str] = ContextVar("switchboard_call_id", default="")


@contextmanager
def call_context(call_id: str) -> Iterator[None]:
    """Tag every log line inside the block (and tasks started in it) with ``call_id``."""
    token = _CALL_ID.set(call_id)
    try:
        with logger.contextualize(call_id=call_id):
            yield
    finally:
        _CALL_ID.reset(token)


def current_call_id() -> str:
    """The id of the call being handled here ('' outside a call), e.g. for a tool webhook."""
    return _CALL_ID.get()


def json_line(record: dict) -> str:
    """One log record as a flat JSON object: what log shippers (Loki, CloudWatch, ELK) index."""
    line: dict[str, object] = {
        "ts": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "role": record["extra"].get("role", ""),
        "message": record["message"],
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
    }
    for key, value in record["extra"].items():
        if key not in _BASE_FIELDS:
            line[key] = value if isinstance(value, str | int | float | bool | None) else repr(value)
    exc = record["exception"]
    if exc is not None:
        # One record stays one line: the traceback is a string field, not continuation lines.
        line["exception"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    return json.dumps(line, ensure_ascii=False)


def _json_sink(stream: TextIO) -> Callable[[Message], None]:
    def write(message: Message) -> None:
        stream.write(json_line(message.record) + "\n")
        stream.flush()

    return write


def _text_format(record: dict) -> str:
    call = " <magenta>{extra[call_id]}</magenta>" if "call_id" in record["extra"] else ""
    return (
        "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
        "<cyan>{extra[role]}</cyan>" + call + " {message}\n{exception}"
    )


def configure_logging(
    level: str = "INFO", fmt: str = "text", role: str = "agent", stream: TextIO | None = None
) -> None:
    """Configure loguru once per process: ``fmt`` is ``text`` (development) or ``json``."""
    stream = stream or sys.stderr
    logger.remove()
    logger.configure(extra={"role": role}, patcher=redact_debug_record)
    if fmt == "json":
        logger.add(_json_sink(stream), level=level, backtrace=False, diagnose=False)
    else:
        logger.add(
            stream,
            level=level,
            format=_text_format,
            # Variable values in tracebacks could print secrets; keep tracebacks plain.
            backtrace=False,
            diagnose=False,
        )
    logging.basicConfig(handlers=[_InterceptHandler()], level=level, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = [_InterceptHandler()]
        logging.getLogger(name).propagate = False
