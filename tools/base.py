"""What every tool is, and what a tool may ask of the gateway while it runs.

A tool is a name, a description, an input schema, honest annotations and
``async call(ctx, args) -> ToolResult``. Built-in tools live in this package;
upstream MCP tools and declarative HTTP tools live in ``gateway`` and satisfy the
same :class:`Tool` protocol.

Tools never import ``gateway`` or ``vault``: whatever they need from the outside
world (the session's workspace, a way to append to the ledger, progress
reporting, reading the session's own events) comes through the
:class:`CallContext` they are handed for each call.

Errors a user (or model) can fix are raised as :class:`ToolError`; the pipeline
turns them into a result with ``isError`` (MCP: a tool failure is a result, not a
JSON-RPC error). Anything else escaping ``call`` is a bug and is reported as an
internal tool error without its details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

JSON = dict[str, Any]


class ToolError(Exception):
    """A failure the caller can act on; its message is shown to the model as the tool result."""


@dataclass(frozen=True, slots=True)
class Annotations:
    """MCP tool annotations (hints a client uses to decide how carefully to treat a call)."""

    read_only: bool = False
    destructive: bool = True
    idempotent: bool = False
    open_world: bool = False
    title: str | None = None

    def to_mcp(self) -> JSON:
        out: JSON = {
            "readOnlyHint": self.read_only,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent,
            "openWorldHint": self.open_world,
        }
        if self.title:
            out["title"] = self.title
        return out


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """How a tool presents itself in ``tools/list``."""

    name: str
    description: str
    input_schema: JSON
    annotations: Annotations = field(default_factory=Annotations)
    output_schema: JSON | None = None
    # Raw MCP annotations from an upstream, passed through untouched when set.
    raw_annotations: JSON | None = None


@dataclass(slots=True)
class ToolResult:
    """A tool's answer: MCP-shaped content blocks, optional structured content, error flag.

    ``content`` holds MCP content blocks as JSON (``{"type": "text", "text": ...}``,
    images, embedded resources, ...) so upstream results pass through unchanged.
    """

    content: list[JSON]
    is_error: bool = False
    structured: JSON | None = None

    @classmethod
    def text(cls, text: str, *, structured: JSON | None = None) -> ToolResult:
        return cls(content=[{"type": "text", "text": text}], structured=structured)

    @classmethod
    def error(cls, text: str) -> ToolResult:
        return cls(content=[{"type": "text", "text": text}], is_error=True)

    def joined_text(self) -> str:
        """All text blocks, newline-joined (what a ledger excerpt or a test looks at)."""
        return "\n".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")


@runtime_checkable
class CallContext(Protocol):
    """What the gateway hands a tool for one call.

    ``session_id`` and ``workspace`` identify the session the call belongs to;
    ``emit`` appends an event of the tool's own domain (``sandbox.lost``,
    ``fetch.refused``...) to that session's ledger; ``read_events`` reads the
    ledger back (for ``session_events``); ``progress`` sends an MCP progress
    notification when the client asked for them (a no-op otherwise).
    """

    @property
    def session_id(self) -> str: ...

    @property
    def workspace(self) -> Path: ...

    async def emit(self, type: str, data: JSON) -> None: ...

    async def read_events(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
        types: Sequence[str] | None = None,
        order: str = "asc",
    ) -> list[JSON]: ...

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None: ...


@runtime_checkable
class Tool(Protocol):
    """Anything that can be listed and called."""

    @property
    def spec(self) -> ToolSpec: ...

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult: ...
