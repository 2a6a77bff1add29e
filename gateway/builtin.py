"""The built-in tools a gateway offers, built from the config: ledger, sandbox, files, browsing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.config import Config
from gateway.errors import StartupError
from gateway.toolset import Toolset
from tools.browse import web_fetch_tool
from tools.files import file_tools
from tools.sandbox import SandboxUnavailable, running_pool
from tools.session_events import session_events_tool
from tools.shell import bash_tool

log = logging.getLogger("keyhand")


@contextlib.asynccontextmanager
async def add_builtin_tools(
    toolset: Toolset, config: Config, workspaces: Path, notices: list[str]
) -> AsyncIterator[None]:
    """Add the built-in tools to ``toolset`` for as long as the context is open.

    Raises :class:`StartupError` when the configured sandbox cannot run here (no
    silent fallback to an unisolated one).
    """
    toolset.add(session_events_tool(), "builtin")
    toolset.add(web_fetch_tool(config.fetch), "builtin")
    if config.sandbox.backend == "unsafe-subprocess":
        notices.append("WARNING: sandbox.backend is unsafe-subprocess: `bash` runs WITHOUT isolation")
    try:
        async with running_pool(config.sandbox, workspaces) as pool:
            notices.extend(f"WARNING: sandbox: {w}" for w in pool.backend.viability().warnings)
            toolset.add(bash_tool(pool), "builtin")
            for tool in file_tools():
                toolset.add(tool, "builtin")
            yield
    except SandboxUnavailable as exc:
        raise StartupError(str(exc)) from None
