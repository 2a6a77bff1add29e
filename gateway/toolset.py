"""The tools a gateway offers, by source, and what a given profile may see of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.config import AgentProfile, Decision
from gateway.policy import decide
from tools.base import Tool

Source = Literal["builtin", "upstream", "http"]
SOURCE_DEFAULT: dict[Source, Decision] = {"builtin": "allow", "upstream": "ask", "http": "ask"}


@dataclass(frozen=True, slots=True)
class Entry:
    tool: Tool
    source: Source


class Toolset:
    """Name -> tool, for every source; per-profile visibility and decisions."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def add(self, tool: Tool, source: Source) -> None:
        name = tool.spec.name
        if name in self._entries:
            raise ValueError(f"two tools are named {name!r}")
        self._entries[name] = Entry(tool, source)

    def replace_source(self, prefix: str, tools: list[Tool], source: Source) -> None:
        """Swap every tool named ``<prefix>__*`` for a fresh list (an upstream's list changed)."""
        for name in [n for n in self._entries if n.startswith(prefix + "__")]:
            del self._entries[name]
        for tool in tools:
            self.add(tool, source)

    def decision(self, profile: AgentProfile, name: str) -> Decision | None:
        """allow / ask / deny for this profile, or None when there is no such tool."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        return decide(profile.tools, name, SOURCE_DEFAULT[entry.source])

    def get(self, name: str) -> Tool | None:
        entry = self._entries.get(name)
        return entry.tool if entry else None

    def visible(self, profile: AgentProfile) -> list[Tool]:
        return [e.tool for n, e in self._entries.items() if self.decision(profile, n) != "deny"]
