"""The MCP surface: lists a session's tools and routes every call into the pipeline.

Built on the SDK's low-level ``Server`` because the tool set is per session
(per principal's profile), not fixed at import time.

Which keyhand session a call belongs to:

1. a ``Keyhand-Session: <id>`` request header re-attaches that session (it must
   be the caller's; someone else's answers "no such session");
2. otherwise, on a stateful connection (``Mcp-Session-Id``), the session bound to
   that MCP connection, created on its first call;
3. otherwise (the stateless 2026-07-28 revision, which has no connection) the
   caller's default session for its client: one per (principal, client name),
   the same one every time, never anyone else's.

Every tool result carries the session id in ``_meta["keyhand/session"]`` so a
client can re-attach later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError

from gateway import __version__
from gateway.auth import LOCAL, Principal
from gateway.config import Decision
from gateway.context import ProgressFn, ToolContext
from gateway.errors import NotFound
from gateway.pipeline import Asker, Call, run_call
from gateway.runtime import Runtime
from gateway.sessions import Session
from tools.base import Tool, ToolResult

log = logging.getLogger("keyhand.mcp")

SESSION_HEADER = "keyhand-session"
SESSION_META = "keyhand/session"
PRINCIPAL_SCOPE_KEY = "keyhand.principal"
_MAX_BINDINGS = 10_000

INSTRUCTIONS = (
    "Keyhand gateway. Tools run in a per-session sandbox; credentials are injected by the gateway and "
    "never visible to you. Every call is recorded in the session's ledger: read it with session_events."
)


def to_mcp_tool(tool: Tool) -> types.Tool:
    spec = tool.spec
    annotations = spec.raw_annotations or spec.annotations.to_mcp()
    return types.Tool.model_validate(
        {
            "name": spec.name,
            "description": spec.description,
            "inputSchema": spec.input_schema,
            "annotations": annotations,
            **({"outputSchema": spec.output_schema} if spec.output_schema else {}),
        }
    )


def to_mcp_result(result: ToolResult, session_id: str) -> types.CallToolResult:
    payload: dict[str, Any] = {
        "content": result.content,
        "isError": result.is_error,
        "_meta": {SESSION_META: session_id},
    }
    if result.structured is not None:
        payload["structuredContent"] = result.structured
    return types.CallToolResult.model_validate(payload)


def connection_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The MCP connection a request belongs to: its ``Mcp-Session-Id``, ``stdio``, or None (stateless)."""
    return ctx.request.headers.get("mcp-session-id") if ctx.request is not None else "stdio"


def put_bounded(mapping: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    """Insert as most recent; forget the least recent beyond :data:`_MAX_BINDINGS`."""
    mapping[key] = value
    mapping.move_to_end(key)
    if len(mapping) > _MAX_BINDINGS:
        mapping.popitem(last=False)


def client_meta(meta: Any) -> dict[str, Any]:
    """The ``keyhand/*`` keys of a request's ``_meta`` (e.g. a harness's ``keyhand/tool_use_id``), for the ledger."""
    if not isinstance(meta, dict):
        return {}
    return {k: v for k, v in meta.items() if isinstance(k, str) and k.startswith("keyhand/") and len(str(v)) < 512}


class ElicitationAsker:
    """Asks through MCP elicitation when this client supports it and the transport allows it."""

    def __init__(self, ctx: ServerRequestContext[Any, Any]) -> None:
        self.ctx = ctx

    async def ask(self, message: str) -> bool | None:
        session = self.ctx.session
        caps = session.client_capabilities
        if caps is None or caps.elicitation is None or not session.can_send_request:
            return None
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"approve": {"type": "boolean", "title": "Approve", "default": False}},
            "required": ["approve"],
        }
        result = await session.elicit_form(message, schema, related_request_id=self.ctx.request_id)
        return result.action == "accept" and bool((result.content or {}).get("approve"))


class McpSurface:
    """Owns the low-level MCP server and the connection -> session bindings."""

    def __init__(self, runtime: Runtime, *, stdio_session: str | None = None) -> None:
        self.rt = runtime
        self.stdio_session = stdio_session
        self._bindings: OrderedDict[tuple[str, str], Session] = OrderedDict()
        self._peers: OrderedDict[str, ServerSession] = OrderedDict()  # connection id -> its back channel
        self._notify_tasks: set[asyncio.Task[None]] = set()
        if runtime.upstreams is not None:
            runtime.upstreams.listeners.append(self.tools_changed)
        self._bind_lock = anyio.Lock()
        self.server: Server[Any] = Server(
            "keyhand",
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )

    # -- handlers --------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        principal = self.principal(ctx)
        profile = self.rt.config.profile(principal.profile)
        self._remember_peer(ctx)
        if self.rt.upstreams is not None:
            await self.rt.upstreams.ensure_listed(principal)
        return types.ListToolsResult(tools=[to_mcp_tool(t) for t in self.rt.toolset.visible(profile)])

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        principal = self.principal(ctx)
        tool, decision = await self.resolve_tool(principal, params.name)
        if tool is None or decision is None:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool: {params.name!r} (see tools/list)")
        session = await self.session_for(ctx, principal)
        return await self.run_tool(
            principal, session, tool, decision, params.arguments or {}, ctx.meta, ElicitationAsker(ctx),
            ctx.session.report_progress,
        )  # fmt: skip

    async def resolve_tool(self, principal: Principal, name: str) -> tuple[Tool | None, Decision | None]:
        """The tool this principal's profile lets it call by that name, and the profile's decision (never deny)."""
        profile = self.rt.config.profile(principal.profile)
        if self.rt.toolset.get(name) is None and self.rt.upstreams is not None:
            await self.rt.upstreams.ensure_listed(principal)
        decision = self.rt.toolset.decision(profile, name)
        tool = self.rt.toolset.get(name)
        if tool is None or decision is None or decision == "deny":
            return None, None
        return tool, decision

    async def run_tool(
        self,
        principal: Principal,
        session: Session,
        tool: Tool,
        decision: Decision,
        arguments: dict[str, Any],
        meta: Any,
        asker: Asker,
        progress_fn: ProgressFn | None,
    ) -> types.CallToolResult:
        """One call through the pipeline, for the SDK's handler and for the fast lane alike."""
        redactor = await self.rt.redactor_for(principal)
        tool_ctx = ToolContext(
            session_id=session.id,
            workspace_root=self.rt.workspaces,
            ledger=self.rt.ledger,
            redactor=redactor,
            progress_fn=progress_fn,
        )
        call = Call(
            session_id=session.id,
            principal=principal,
            tool=tool,
            args=arguments,
            decision=decision,
            ctx=tool_ctx,
            redactor=redactor,
            asker=asker,
            ledger=self.rt.ledger,
            credentials=self.rt.credentials,
            max_event_bytes=self.rt.config.ledger.max_event_bytes,
            meta=client_meta(meta),
        )
        result = await run_call(call)
        return to_mcp_result(result, session.id)

    def bound_session(self, principal: Principal, connection: str, wanted: str | None) -> Session | None:
        """The session a call on this MCP connection belongs to, if one is already bound (no I/O)."""
        key = (principal.name, "attach:" + wanted) if wanted else (principal.name, connection)
        return self._bindings.get(key)

    # -- telling clients the tool list changed -----------------------------------

    def _remember_peer(self, ctx: ServerRequestContext[Any, Any]) -> None:
        """Keep the back channel of each stateful connection that listed tools, to notify it later."""
        connection = connection_id(ctx)
        if connection:
            put_bounded(self._peers, connection, ctx.session)

    def tools_changed(self) -> None:
        """An upstream changed its tools: send ``notifications/tools/list_changed`` to every client that listed them."""
        task = asyncio.get_running_loop().create_task(self._notify_all())
        self._notify_tasks.add(task)
        task.add_done_callback(self._notify_tasks.discard)

    async def _notify_all(self) -> None:
        for connection, peer in list(self._peers.items()):
            try:
                with anyio.fail_after(5):
                    await peer.send_tool_list_changed()
            except Exception:  # a connection that is gone or slow: forget it, it will list again when it returns
                self._peers.pop(connection, None)

    # -- who and which session ---------------------------------------------------

    def principal(self, ctx: ServerRequestContext[Any, Any]) -> Principal:
        request = ctx.request
        if request is None:  # stdio: the person who started the process
            return LOCAL
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
        if not isinstance(principal, Principal):  # the auth middleware always sets it
            raise MCPError(types.INTERNAL_ERROR, "request reached the MCP server unauthenticated")
        return principal

    async def session_for(self, ctx: ServerRequestContext[Any, Any], principal: Principal) -> Session:
        request = ctx.request
        wanted = request.headers.get(SESSION_HEADER) if request is not None else self.stdio_session
        if wanted:
            return await self._attached(principal, wanted)
        connection = connection_id(ctx)
        if connection:
            return await self._bound(principal, connection, self._client_name(ctx))
        return await self.rt.sessions.default_for(principal, self._client_name(ctx))

    async def _attached(self, principal: Principal, session_id: str) -> Session:
        key = (principal.name, "attach:" + session_id)
        session = self._bindings.get(key)
        if session is None:
            try:
                session = await self.rt.sessions.get(session_id, principal)
            except NotFound:
                raise MCPError(types.INVALID_PARAMS, f"no session {session_id!r} for this API key") from None
            put_bounded(self._bindings, key, session)
        return session

    async def _bound(self, principal: Principal, connection: str, client: str) -> Session:
        key = (principal.name, connection)
        async with self._bind_lock:
            session = self._bindings.get(key)
            if session is not None:
                self._bindings.move_to_end(key)
                return session
            session = await self.rt.sessions.create(principal, client=client)
            put_bounded(self._bindings, key, session)
            if self.stdio_session is None and connection == "stdio":
                self.stdio_session = session.id
            return session

    @staticmethod
    def _client_name(ctx: ServerRequestContext[Any, Any]) -> str:
        params = ctx.session.client_params
        if params is not None and params.client_info is not None:
            return params.client_info.name
        if ctx.request is not None:
            return str(ctx.request.headers.get("user-agent", "unknown"))
        return "stdio"
