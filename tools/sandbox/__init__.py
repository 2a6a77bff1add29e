"""Sandbox protocol and backends (bubblewrap by default; plain subprocess only when configured as unsafe).

What the gateway uses::

    settings = SandboxSettings.model_validate(config.sandbox)
    async with running_pool(settings, workspace_root) as pool:   # SandboxUnavailable if bwrap can't run
        tools = [bash_tool(pool), *file_tools()]                  # tools.shell, tools.files
"""

from tools.sandbox.pool import SandboxPool, backend_for, running_pool
from tools.sandbox.protocol import (
    SANDBOX_WORKSPACE,
    ExecResult,
    Sandbox,
    SandboxBackend,
    SandboxError,
    SandboxLost,
    SandboxUnavailable,
    Viability,
)
from tools.sandbox.settings import SandboxLimits, SandboxNetwork, SandboxSettings

__all__ = [
    "SANDBOX_WORKSPACE",
    "ExecResult",
    "Sandbox",
    "SandboxBackend",
    "SandboxError",
    "SandboxLimits",
    "SandboxLost",
    "SandboxNetwork",
    "SandboxPool",
    "SandboxSettings",
    "SandboxUnavailable",
    "Viability",
    "backend_for",
    "running_pool",
]
