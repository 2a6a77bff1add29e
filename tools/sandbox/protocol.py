"""The Sandbox protocol every backend implements, its results and its errors.

Errors::

    SandboxError                 base of everything this package raises
    ├── SandboxUnavailable       the configured backend cannot work on this machine (why + how to fix)
    └── SandboxLost              a running sandbox died or stopped answering (cattle: provision a new one)

A backend says whether it can work here (:class:`Viability`, in the style of
jaraco/keyring's ``priority``): the gateway asks at start and refuses to serve
with a backend that cannot, instead of silently falling back to something weaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

# Where the workspace appears inside every sandbox (and the prefix file tools accept).
SANDBOX_WORKSPACE = "/workspace"


class SandboxError(Exception):
    """Base class of sandbox failures."""


class SandboxUnavailable(SandboxError):
    """The configured backend cannot run here; the message says what to install or change."""


class SandboxLost(SandboxError):
    """The sandbox died (killed, out of memory, supervisor gone) or stopped answering.

    ``reason`` is a short human sentence ("supervisor exited with signal 9 (SIGKILL)").
    The sandbox is unusable afterwards; the pool provisions a fresh one on the same workspace.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Viability:
    """Whether a backend can work on this machine, and if not, why and how to fix it."""

    ok: bool
    reason: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class ExecResult:
    """The outcome of one command.

    ``exit_code`` is None when the command did not finish (timed out or cancelled).
    ``output_files`` lists where the full stdout/stderr were spilled (paths as the
    sandbox sees them) when they exceeded the output cap. ``shell_restarted`` says
    the persistent shell was replaced (after a timeout, a cancel, ``exit`` or
    ``restart``), so ``cd`` and exported variables were reset.
    """

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    cancelled: bool = False
    truncated: bool = False
    shell_restarted: bool = False
    output_files: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EgressRefusal:
    """A connection the sandbox's egress proxy refused: the host asked for, and the guard's reason."""

    host: str
    reason: str


@runtime_checkable
class Sandbox(Protocol):
    """One session's isolated execution environment."""

    @property
    def workspace(self) -> Path:
        """The host directory bound read-write at :data:`SANDBOX_WORKSPACE`."""
        ...

    @property
    def pid(self) -> int | None:
        """Host pid of the sandbox's outermost process (killing it kills the sandbox); None before start."""
        ...

    async def exec(self, command: str, *, timeout_s: float, restart: bool = False) -> ExecResult:
        """Run ``command`` in the persistent shell; raises :class:`SandboxLost` if the sandbox died.

        Cancelling the awaiting task kills the command's process tree.
        """
        ...

    async def alive(self) -> bool:
        """True while the sandbox answers."""
        ...

    async def destroy(self) -> None:
        """Kill every process of the sandbox; idempotent. The workspace is left alone."""
        ...

    def take_egress_refusals(self) -> list[EgressRefusal]:
        """Connections refused by the sandbox's egress proxy since the last call (empty without one)."""
        ...


class SandboxBackend(Protocol):
    """Creates sandboxes of one kind."""

    name: str

    def viability(self) -> Viability:
        """Whether this backend can work here (cheap; no sandbox is started)."""
        ...

    async def provision(self, session_id: str, workspace: Path) -> Sandbox:
        """Start a sandbox for ``session_id`` on ``workspace`` and wait until it answers.

        Raises :class:`SandboxUnavailable` if it cannot start, :class:`SandboxLost` if it dies while starting.
        """
        ...
