"""When a supervised process that exited is started again: after a backoff that doubles up to
a ceiling, and resets once the process has run stably (one policy for children and Redis)."""

from __future__ import annotations

import time

from loguru import logger


class RestartBackoff:
    """The restart bookkeeping of one supervised process."""

    def __init__(self, start_secs: float, max_secs: float, stable_after_secs: float = 60.0):
        self.start_secs = start_secs
        self.max_secs = max_secs
        self.stable_after_secs = stable_after_secs
        self.backoff = start_secs
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.restarts = 0

    def started(self) -> None:
        """The process was (re)started just now."""
        self.started_at = time.monotonic()
        self.restart_at = None

    def due(self, name: str, exit_code: int | None, now: float | None = None) -> bool:
        """Whether to start the process again now (``exit_code`` None: it is running)."""
        now = time.monotonic() if now is None else now
        if exit_code is None:
            if now - self.started_at > self.stable_after_secs:
                self.backoff = self.start_secs
            return False
        if self.restart_at is None:
            self.restart_at = now + self.backoff
            logger.error(f"{name} exited with {exit_code}; restarting it in {self.backoff:g} s")
            self.backoff = min(self.backoff * 2, self.max_secs)
            return False
        if now < self.restart_at:
            return False
        self.restarts += 1
        return True
