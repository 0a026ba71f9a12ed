"""What an emulator has seen, served at ``GET /stats`` so tests and load runs can check the traffic."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

_MAX_ITEMS = 1000


@dataclass
class EmulatorStats:
    """Connections (or requests) served, the recent items handled (transcripts, texts, prompts)
    and the recent streams' format and traffic (what a client asked for and sent)."""

    connections: int = 0
    items: list[Any] = field(default_factory=list)
    streams: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict:
        del self.items[:-_MAX_ITEMS]
        del self.streams[:-_MAX_ITEMS]
        return asdict(self)
