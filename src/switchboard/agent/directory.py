"""An agent per number: a directory of agent configs, each naming the calls it answers.

``SWITCHBOARD_AGENTS_DIR`` holds ``*.yaml`` agent configs naming ``numbers: [...]`` (our
dialed numbers), ``livekit_trunks: [ST_...]`` and ``livekit_rooms: [call-sales-*]``. Every
ingress describes its call as a :class:`CallRoute` and :meth:`AgentDirectory.choose` picks the
agent, most specific first: the agent named by an outbound call, then the dialed number (Twilio
``To``, LiveKit ``sip.trunkPhoneNumber``), then the LiveKit trunk (``sip.trunkID``), then the
first room pattern (by file name) matching the room; anything else gets the default agent
(``--agent``). Files are checked for changes (mtime and size) at most every
``agents_reload_secs`` when a call asks, so edits apply to the next call without a restart.
A file that fails validation, or claims a number, trunk or room pattern another file already
answers, is refused: the error names the file and the field, is counted in
``agent_config_errors_total``, and the file's previous good version keeps serving.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from switchboard.agent.config import AgentConfig, load_agent_config
from switchboard.errors import ConfigError
from switchboard.observability import metrics

_PATTERNS = ("*.yaml", "*.yml")


# The fields that claim calls for an agent, each a table of the directory.
_CLAIMS = ("numbers", "livekit_trunks", "livekit_rooms")


@dataclass(frozen=True)
class CallRoute:
    """What an arriving call says about whom it is for (any of it may be unknown)."""

    agent: str | None = None  # named by an outbound call
    dialed: str | None = None  # our number the call came in on (or went out from)
    trunk: str | None = None  # the LiveKit SIP trunk
    room: str | None = None  # the LiveKit room

    @classmethod
    def of_stream(cls, parameters: dict[str, str]) -> CallRoute:
        """A Twilio stream's route: a named ``Agent`` (outbound calls), else the number dialed
        (``To`` inbound; our own ``From`` on an outbound call)."""
        outbound = parameters.get("Direction", "").startswith("outbound")
        return cls(
            agent=parameters.get("Agent") or None,
            dialed=parameters.get("From" if outbound else "To"),
        )


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[float, int]  # mtime, size of the version tried last
    config: AgentConfig | None  # the last good version (None: never loaded)


class AgentDirectory:
    """The agents this process answers with, by dialed number."""

    def __init__(
        self,
        default: AgentConfig,
        directory: Path | None = None,
        *,
        reload_secs: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.default = default
        self.directory = directory
        self.errors: dict[str, str] = {}
        self._reload_secs = reload_secs
        self._clock = clock
        self._files: dict[Path, _Loaded] = {}
        self._tables: dict[str, dict[str, AgentConfig]] = {field: {} for field in _CLAIMS}
        self._checked_at: float | None = None
        if directory is not None:
            if not directory.is_dir():
                raise ConfigError(f"agents dir {directory}: not a directory")
            self.reload()

    def choose(self, route: CallRoute) -> AgentConfig:
        """The agent answering a call: named, else by number, trunk, room, else the default."""
        self.refresh()
        if route.agent:
            named = self.by_name(route.agent)
            if named is not None:
                return named
            logger.warning(f"no agent named {route.agent!r}; choosing by the call's number")
        numbers, trunks, rooms = (self._tables[field] for field in _CLAIMS)
        if route.dialed and route.dialed in numbers:
            return numbers[route.dialed]
        if route.trunk and route.trunk in trunks:
            return trunks[route.trunk]
        if route.room:
            for pattern, config in rooms.items():
                if fnmatch.fnmatchcase(route.room, pattern):
                    return config
        return self.default

    def for_number(self, dialed: str | None) -> AgentConfig:
        """The agent answering ``dialed``; the default for unknown or missing numbers."""
        return self.choose(CallRoute(dialed=dialed))

    def by_name(self, name: str) -> AgentConfig | None:
        """The agent with this ``name`` (outbound calls name their agent)."""
        return next((a for a in self.agents() if a.name == name), None)

    def for_call(self, parameters: dict[str, str]) -> AgentConfig:
        """The agent for a Twilio call's stream parameters (see ``CallRoute.of_stream``)."""
        return self.choose(CallRoute.of_stream(parameters))

    def agents(self) -> list[AgentConfig]:
        """Every agent that can answer a call now (the default first)."""
        self.refresh()
        seen = [self.default]
        for table in self._tables.values():
            for config in table.values():
                if all(config is not s for s in seen):
                    seen.append(config)
        return seen

    def refresh(self) -> None:
        """Reload changed files if the last check is older than ``reload_secs``."""
        if self.directory is None:
            return
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._reload_secs:
            self.reload()

    def reload(self) -> None:
        """Re-read changed files and rebuild the tables."""
        assert self.directory is not None
        self._checked_at = self._clock()
        present = sorted({p for pattern in _PATTERNS for p in self.directory.glob(pattern)})
        for path in set(self._files) - set(present):
            logger.info(f"agents dir: {path.name} removed")
            del self._files[path]
            self.errors.pop(path.name, None)
        for path in present:
            self._load_if_changed(path)
        self._rebuild()

    def _load_if_changed(self, path: Path) -> None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return  # removed between glob and stat; the next reload drops it
        stamp = (stat.st_mtime, stat.st_size)
        known = self._files.get(path)
        if known is not None and known.stamp == stamp:
            return
        previous = known.config if known else None
        try:
            config = load_agent_config(path)
        except ConfigError as e:
            self._refuse(path, str(e), stamp, previous)
            return
        self._files[path] = _Loaded(stamp, config)
        self.errors.pop(path.name, None)
        claims = [c for field in _CLAIMS for c in getattr(config, field)]
        logger.info(
            f"agents dir: {path.name} loaded ({config.name}: {', '.join(claims) or 'no numbers'})"
        )

    def _refuse(
        self, path: Path, error: str, stamp: tuple[float, int], previous: AgentConfig | None
    ) -> None:
        self._files[path] = _Loaded(stamp, previous)
        self.errors[path.name] = error
        metrics.AGENT_CONFIG_ERRORS.inc()
        kept = f"; still serving its previous version ({previous.name})" if previous else ""
        logger.error(f"agents dir: refusing {path.name}: {error}{kept}")

    def _rebuild(self) -> None:
        tables: dict[str, dict[str, AgentConfig]] = {field: {} for field in _CLAIMS}
        owner: dict[tuple[str, str], Path] = {}
        for path, loaded in sorted(self._files.items()):
            config = loaded.config
            if config is None:
                continue
            clash = [
                (field, key)
                for field in _CLAIMS
                for key in getattr(config, field)
                if key in tables[field]
            ]
            if clash:
                field = clash[0][0]
                keys = ", ".join(k for f, k in clash if f == field)
                error = (
                    f"agent config {path}: {field}: {keys} already answered by "
                    f"{owner[clash[0]].name}"
                )
                if self.errors.get(path.name) != error:
                    self._refuse(path, error, loaded.stamp, None)
                continue
            for field in _CLAIMS:
                for key in getattr(config, field):
                    tables[field][key] = config
                    owner[(field, key)] = path
        self._tables = tables
