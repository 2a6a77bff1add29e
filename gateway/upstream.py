"""Upstream MCP servers: their tools appear as ``<upstream>__<tool>``, called with vault credentials.

One :class:`Upstream` per configured server. It keeps one live MCP connection
per credential (an upstream session belongs to the token that opened it): a
Streamable HTTP client whose ``httpx2.AsyncClient`` carries a :class:`VaultAuth`,
or a stdio process that receives its secret as an environment variable (the
upstream process, never the sandbox). Connections are reused; a broken one is
dropped and the next call reconnects, behind a circuit breaker that stops
hammering an upstream that keeps failing.

The tool list is cached and refreshed when the upstream sends
``notifications/tools/list_changed``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from gateway.auth import Principal
from gateway.config import Inject, UpstreamConfig
from gateway.credentials import CredentialRefused, Credentials, Grant
from gateway.injection import VaultAuth
from gateway.toolset import Toolset
from gateway.upstream_http import HttpCaller, UpstreamHttpError
from tools.base import Annotations, CallContext, ToolError, ToolResult, ToolSpec

log = logging.getLogger("keyhand.upstream")

LEAN_PROTOCOLS = frozenset({"2025-03-26", "2025-06-18", "2025-11-25"})
"""Handshake revisions whose ``tools/call`` the lean HTTP path sends (session header, plain JSON-RPC)."""


def connection_key(grant: Grant | None) -> str:
    """Connections are per credential (an upstream session belongs to its token); none: ``anonymous``."""
    return grant.key if grant else "anonymous"


class UpstreamUnavailable(ToolError):
    """The upstream cannot be reached now; the message names it and when it will be tried again."""


@dataclass
class Breaker:
    """Opens after ``threshold`` consecutive failures; waits with exponential backoff before a retry."""

    threshold: int = 3
    base_s: float = 1.0
    max_s: float = 30.0
    failures: int = 0
    open_until: float = 0.0

    def check(self, name: str) -> None:
        wait = self.open_until - time.monotonic()
        if wait > 0:
            raise UpstreamUnavailable(
                f"upstream {name!r} is unavailable after {self.failures} failed attempts; "
                f"Keyhand will try it again in {wait:.1f} s"
            )

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            backoff = min(self.max_s, self.base_s * 2 ** (self.failures - self.threshold))
            self.open_until = time.monotonic() + backoff

    def succeeded(self) -> None:
        self.failures, self.open_until = 0, 0.0


@dataclass
class Connection:
    """A live MCP client session to the upstream, run by its own task so it can be closed from anywhere."""

    session: ClientSession | None = None
    closed: anyio.Event = field(default_factory=anyio.Event)
    ready: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None
    env_secret: str | None = None
    caller: HttpCaller | None = None
    """HTTP upstreams: sends this session's ``tools/call`` on the lean path (``gateway/upstream_http.py``)."""


class Upstream:
    def __init__(self, config: UpstreamConfig, on_tools_changed: Callable[[Upstream], None]) -> None:
        self.config = config
        self.name = config.name
        self.tools: list[UpstreamTool] = []
        self.listed = False
        self.breaker = Breaker()
        self._connections: dict[str, Connection] = {}
        self._lock = anyio.Lock()
        self._on_tools_changed = on_tools_changed
        self._tg: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                for conn in self._connections.values():
                    conn.closed.set()
                self._connections.clear()
                tg.cancel_scope.cancel()

    # -- connections -------------------------------------------------------------

    async def session(self, grant: Grant | None) -> ClientSession:
        """The live session for this credential, connecting (once, under a lock) if needed."""
        conn = await self.connection(grant)
        assert conn.session is not None
        return conn.session

    async def connection(self, grant: Grant | None) -> Connection:
        """The live connection for this credential, connecting (once, under a lock) if needed."""
        self.breaker.check(self.name)
        key = connection_key(grant)
        async with self._lock:
            conn = self._connections.get(key)
            if conn is not None and self.config.command and grant is not None:
                if conn.env_secret != await grant.fetch(False):  # the token was refreshed: restart with the new one
                    self.drop(key)
                    conn = None
            if conn is None or conn.closed.is_set():
                conn = await self._connect(key, grant)
        return conn

    async def _connect(self, key: str, grant: Grant | None) -> Connection:
        assert self._tg is not None, "Upstream.running() must be entered first"
        conn = Connection()
        if self.config.command and grant is not None:
            conn.env_secret = await grant.fetch(False)
        self._tg.start_soon(self._hold, conn, grant)
        try:
            with anyio.fail_after(self.config.connect_timeout_s):
                await conn.ready.wait()
        except TimeoutError:
            conn.closed.set()
            self.breaker.failed()
            raise UpstreamUnavailable(
                f"upstream {self.name!r} did not answer within {self.config.connect_timeout_s:g} s while connecting"
            ) from None
        if conn.error is not None or conn.session is None:
            self.breaker.failed()
            raise UpstreamUnavailable(f"upstream {self.name!r} is unreachable: {_describe(conn.error)}")
        self._connections[key] = conn
        return conn

    async def _hold(self, conn: Connection, grant: Grant | None) -> None:
        try:
            async with self._transport(conn, grant) as (read, write):
                async with ClientSession(read, write, message_handler=self._on_message) as session:
                    await session.initialize()
                    conn.session = session
                    if conn.caller is not None:
                        if session.protocol_version in LEAN_PROTOCOLS:
                            conn.caller.protocol_version = session.protocol_version
                        else:  # a revision the lean path does not speak: every call goes through the SDK
                            conn.caller = None
                    conn.ready.set()
                    await conn.closed.wait()
        except Exception as exc:  # the connection's own boundary: report to whoever waits, then end
            conn.error = exc
            log.warning("upstream %s connection ended: %s", self.name, _describe(exc))
        finally:
            conn.closed.set()
            conn.ready.set()
            if conn.caller is not None:
                conn.caller.close()

    @contextlib.asynccontextmanager
    async def _transport(self, conn: Connection, grant: Grant | None) -> AsyncIterator[tuple[Any, Any]]:
        cfg = self.config
        if cfg.command:
            env = {**get_default_environment(), **cfg.env}
            if cfg.inject.env and conn.env_secret is not None:
                env[cfg.inject.env] = conn.env_secret
            params = StdioServerParameters(command=cfg.command[0], args=cfg.command[1:], env=env)
            async with stdio_client(params) as (read, write):
                yield read, write
            return
        assert cfg.url is not None
        auth = VaultAuth(grant.fetch, grant.header) if grant is not None else None
        timeout = httpx2.Timeout(cfg.connect_timeout_s, read=cfg.timeout_s + 5)
        caller = conn.caller = HttpCaller(cfg.url, auth=auth, connect_timeout_s=cfg.connect_timeout_s)

        async def remember_session(response: httpx2.Response) -> None:
            if session_id := response.headers.get("mcp-session-id"):
                caller.session_id = session_id

        async with httpx2.AsyncClient(
            auth=auth, timeout=timeout, follow_redirects=False, event_hooks={"response": [remember_session]}
        ) as http:
            async with streamable_http_client(cfg.url, http_client=http) as (read, write, *_):
                yield read, write

    def drop(self, key: str) -> None:
        conn = self._connections.pop(key, None)
        if conn is not None:
            conn.closed.set()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.listed = False
            self._on_tools_changed(self)

    # -- listing and calling ---------------------------------------------------------

    async def list_tools(self, grant: Grant | None) -> list[UpstreamTool]:
        key = connection_key(grant)
        session = await self.session(grant)
        try:
            with anyio.fail_after(self.config.timeout_s):
                listed = await session.list_tools()
        except Exception as exc:
            self._failed(key)
            raise UpstreamUnavailable(f"upstream {self.name!r} could not list its tools: {_describe(exc)}") from None
        self.breaker.succeeded()
        self.tools = [UpstreamTool(self, tool) for tool in listed.tools]
        self.listed = True
        return self.tools

    async def call(self, grant: Grant | None, tool: str, args: Mapping[str, Any], ctx: CallContext) -> ToolResult:
        key = connection_key(grant)
        conn = await self.connection(grant)

        async def forward(progress: float, total: float | None, message: str | None) -> None:
            await ctx.progress(progress, total, message)

        try:
            with anyio.fail_after(self.config.timeout_s):
                if conn.caller is not None:
                    result = await self._call_lean(conn.caller, tool, args, ctx)
                else:
                    assert conn.session is not None
                    result = await conn.session.call_tool(tool, dict(args), progress_callback=forward)
        except TimeoutError:
            self._failed(key)
            raise ToolError(
                f"upstream {self.name!r} did not answer {tool} within {self.config.timeout_s:g} s"
            ) from None
        except MCPError as exc:
            self.breaker.succeeded()
            raise ToolError(f"upstream {self.name!r} refused {tool}: {exc.message}") from None
        except Exception as exc:
            self._failed(key)
            raise ToolError(f"upstream {self.name!r} failed during {tool}: {_describe(exc)}") from None
        self.breaker.succeeded()
        return to_tool_result(result)

    async def _call_lean(
        self, caller: HttpCaller, tool: str, args: Mapping[str, Any], ctx: CallContext
    ) -> types.CallToolResult:
        token = "keyhand-progress"

        async def on_notification(message: dict[str, Any]) -> None:
            params = message.get("params") or {}
            if message.get("method") == "notifications/progress" and params.get("progressToken") == token:
                await ctx.progress(float(params.get("progress", 0)), params.get("total"), params.get("message"))
            elif message.get("method") == "notifications/tools/list_changed":
                await self._on_message(types.ToolListChangedNotification())

        params = {"name": tool, "arguments": dict(args), "_meta": {"progressToken": token}}
        result = await caller.request("tools/call", params, on_notification)
        try:
            return types.CallToolResult.model_validate(result)
        except ValidationError:
            raise UpstreamHttpError("the upstream's answer is not a tool result") from None

    def _failed(self, key: str) -> None:
        self.breaker.failed()
        self.drop(key)


def to_tool_result(result: types.CallToolResult) -> ToolResult:
    content = [block.model_dump(by_alias=True, exclude_none=True, mode="json") for block in result.content]
    return ToolResult(content=content, is_error=bool(result.is_error), structured=result.structured_content)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "the connection closed"
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


@dataclass
class Binding:
    """How a tool source uses a credential (DESIGN.md: Binding)."""

    credential: str | None
    inject: Inject
    allow_unauthenticated: bool


class UpstreamTool:
    """One upstream tool as a Keyhand tool; the credential step hands it its secret fetcher."""

    def __init__(self, upstream: Upstream, tool: types.Tool) -> None:
        self.upstream = upstream
        self.remote_name = tool.name
        annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
        self.spec = ToolSpec(
            name=f"{upstream.name}__{tool.name}",
            description=tool.description or "",
            input_schema=tool.input_schema,
            annotations=Annotations(),
            output_schema=tool.output_schema,
            raw_annotations=annotations or {"openWorldHint": True},
        )
        cfg = upstream.config
        self.binding = Binding(cfg.credential, cfg.inject, cfg.allow_unauthenticated)

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        grant = getattr(ctx, "credential", None)
        return await self.upstream.call(grant, self.remote_name, args, ctx)


class Upstreams:
    """Every configured upstream: run their connections, keep their tools in the toolset."""

    def __init__(self, configs: list[UpstreamConfig], toolset: Toolset, credentials: Credentials | None) -> None:
        self.toolset = toolset
        self.credentials = credentials
        self.all = [Upstream(cfg, self._changed) for cfg in configs]
        self._list_lock = anyio.Lock()
        self.listeners: list[Callable[[], None]] = []
        """Called when an upstream's tool list changed (the MCP surface tells its clients)."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for upstream in self.all:
                await stack.enter_async_context(upstream.running())
            yield

    def _changed(self, upstream: Upstream) -> None:
        log.info("upstream %s changed its tool list; it will be listed again", upstream.name)
        for listener in self.listeners:
            listener()

    async def ensure_listed(self, principal: Principal) -> None:
        """List every upstream not listed yet (or whose list changed), with this principal's credential."""
        async with self._list_lock:
            for upstream in self.all:
                if upstream.listed:
                    continue
                try:
                    grant = await self._grant(upstream, principal)
                    tools = await upstream.list_tools(grant)
                except (ToolError, CredentialRefused) as exc:
                    log.warning("upstream %s not listed: %s", upstream.name, exc)
                    continue
                self.toolset.replace_source(upstream.name, list(tools), "upstream")

    async def _grant(self, upstream: Upstream, principal: Principal) -> Grant | None:
        cfg = upstream.config
        if cfg.credential is None:
            return None
        if self.credentials is None:
            raise CredentialRefused("the vault is not open")
        return await self.credentials.grant(
            cfg.credential, cfg.inject, principal, None, optional=cfg.allow_unauthenticated
        )
