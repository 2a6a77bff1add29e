"""The explicit unsafe backend: the same supervisor and protocol, with NO isolation at all.

Only for machines where bubblewrap cannot run and the operator has said so in the
config (``sandbox.backend: unsafe-subprocess``). Commands run as the gateway's own
user with its filesystem and network; every result carries :data:`WARNING` so that
neither the person nor the model can mistake it for a sandbox.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anyio

from tools.sandbox.bwrap import SANDBOX_ENV, supervisor_source
from tools.sandbox.channel import SupervisorChannel
from tools.sandbox.protocol import EgressRefusal, ExecResult, SandboxLost, Viability
from tools.sandbox.settings import SandboxSettings

WARNING = "WARNING: unsafe-subprocess backend: this command ran WITHOUT any sandbox, as the gateway's own user."
PROVISION_TIMEOUT_S = 15.0


class UnsafeBackend:
    name = "unsafe-subprocess"

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings

    def viability(self) -> Viability:
        return Viability(True, warnings=(WARNING,))

    async def provision(self, session_id: str, workspace: Path) -> UnsafeSandbox:
        sandbox = UnsafeSandbox(self.settings, session_id, workspace)
        await sandbox.start()
        return sandbox


class UnsafeSandbox:
    """A supervisor run directly on the host, in the workspace directory."""

    def __init__(self, settings: SandboxSettings, session_id: str, workspace: Path) -> None:
        self.settings = settings
        self.session_id = session_id
        self._workspace = workspace
        self._channel: SupervisorChannel | None = None
        self.provision_s = 0.0

    @property
    def workspace(self) -> Path:
        return self._workspace

    @property
    def pid(self) -> int | None:
        return self._channel.process.pid if self._channel else None

    async def start(self) -> None:
        started = time.monotonic()
        cfg = {
            "workspace": str(self._workspace),
            "pidns": False,
            "output_bytes": self.settings.limits.output_bytes,
            "limits": self.settings.limits.model_dump(include={"cpu_s", "memory_mb", "file_size_mb", "open_files"}),
        }
        source = supervisor_source().decode()
        process = await anyio.open_process(
            [sys.executable, "-I", "-S", "-B", "-c", source, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # read only when the sandbox dies (see SupervisorChannel)
            cwd=str(self._workspace),
            env={**SANDBOX_ENV, "HOME": str(self._workspace)},
            start_new_session=True,
        )
        self._channel = SupervisorChannel(process)
        try:
            await self._channel.ready(PROVISION_TIMEOUT_S)
        except SandboxLost:
            await self.destroy()
            raise
        self.provision_s = time.monotonic() - started

    async def exec(self, command: str, *, timeout_s: float, restart: bool = False) -> ExecResult:
        if self._channel is None:
            raise SandboxLost("the sandbox was never started")
        result = await self._channel.exec(command, timeout_s=timeout_s, restart=restart)
        result.notes.insert(0, WARNING)
        return result

    async def alive(self) -> bool:
        return self._channel is not None and self._channel.process.returncode is None and await self._channel.ping()

    async def destroy(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def take_egress_refusals(self) -> list[EgressRefusal]:
        return []  # the unsafe backend has the host's own network: there is no proxy to refuse anything
