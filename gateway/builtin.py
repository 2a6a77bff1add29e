"""The built-in tools a gateway offers, built from the config: ledger, sandbox, files, browsing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from gateway.config import Config
from gateway.toolset import Toolset
from tools.session_events import session_events_tool


@contextlib.asynccontextmanager
async def add_builtin_tools(toolset: Toolset, config: Config, notices: list[str]) -> AsyncIterator[None]:
    """Add the built-in tools to ``toolset`` for as long as the context is open."""
    toolset.add(session_events_tool(), "builtin")
    yield
