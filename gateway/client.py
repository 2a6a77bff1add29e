"""Keyhand for an existing ``anthropic`` agent loop: tools in, tool results out, messages logged.

A loop that already calls ``client.messages.create(...)`` needs three more lines::

    async with KeyhandClient(url, api_key) as keyhand:
        tools = await keyhand.tools()                          # Anthropic tool definitions
        ...
        results = await keyhand.run_tool_uses(message.content)  # tool_result blocks
        await keyhand.append("agent.message", {...})           # optional: the loop's own messages

Every ``tool_use`` runs through keyhand's MCP endpoint (``/mcp``) with the
official ``mcp`` SDK client, so it goes through the gateway's pipeline (policy,
credentials, redaction) and lands in the session's ledger as ``tool.call`` /
``tool.result``. The loop's own messages go to the ledger HTTP API
(``POST /v1/sessions/{id}/events``). When no session id is given, one is created
through ``POST /v1/sessions`` before the first call, so :attr:`session_id` is
known from the start and a later process can re-attach with it.

Errors: a failing tool, an unknown tool or bad arguments become a ``tool_result``
with ``is_error: True`` (the model can react); a gateway that cannot be reached
or refuses the API key raises :class:`KeyhandClientError` (the loop cannot go on).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, cast

import anyio
import httpx2
import mcp_types as types
from anthropic.types import ToolParam, ToolResultBlockParam
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.errors import KeyhandError

Block = dict[str, Any]
SESSION_HEADER = "Keyhand-Session"
DEFAULT_URL = "http://127.0.0.1:8765/mcp"
PAGE = 1000


class KeyhandClientError(KeyhandError):
    """The gateway could not be reached, refused the API key, or rejected a ledger request."""


def as_block(block: Any) -> Block:
    """A content block as a plain dict, whether it came from the SDK (pydantic) or is a dict already."""
    if isinstance(block, dict):
        return block
    dump = getattr(block, "model_dump", None)
    if dump is None:
        raise TypeError(f"not a content block: {block!r}")
    result: Block = dump(mode="json", exclude_none=True)
    return result


def api_base(mcp_url: str) -> str:
    """The gateway's base URL (for ``/v1/...``) from its MCP endpoint URL."""
    url = httpx2.URL(mcp_url)
    path = url.path.rstrip("/").removesuffix("/mcp")
    return str(url.copy_with(path=path or "/", query=None)).rstrip("/")


def to_anthropic_tool(tool: types.Tool) -> ToolParam:
    """An MCP tool as an Anthropic tool definition (``name``, ``description``, ``input_schema``)."""
    return {"name": tool.name, "description": tool.description or "", "input_schema": tool.input_schema}


def to_anthropic_content(result: types.CallToolResult) -> list[Block]:
    """MCP result content as ``tool_result`` content blocks (text and base64 images)."""
    blocks: list[Block] = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            blocks.append({"type": "text", "text": item.text})
        elif isinstance(item, types.ImageContent):
            source = {"type": "base64", "media_type": item.mime_type, "data": item.data}
            blocks.append({"type": "image", "source": source})
        elif isinstance(item, types.EmbeddedResource) and isinstance(item.resource, types.TextResourceContents):
            blocks.append({"type": "text", "text": item.resource.text})
        elif isinstance(item, types.ResourceLink):
            blocks.append({"type": "text", "text": f"[resource {item.uri}]"})
        else:  # audio, binary resources: the Messages API has no block for them
            blocks.append({"type": "text", "text": f"[{item.type} content omitted]"})
    if not blocks and result.structured_content is not None:
        blocks.append({"type": "text", "text": json.dumps(result.structured_content)})
    return blocks or [{"type": "text", "text": "(no output)"}]


def tool_result(tool_use_id: str, content: list[Block], *, is_error: bool = False) -> ToolResultBlockParam:
    """A ``tool_result`` block (``content`` holds text and image blocks in the Messages API's shape)."""
    block: Block = {"type": "tool_result", "tool_use_id": tool_use_id, "content": content}
    if is_error:
        block["is_error"] = True
    return cast(ToolResultBlockParam, block)


def tool_uses(content: Iterable[Any]) -> list[Block]:
    """The ``tool_use`` blocks of an assistant message's content, as dicts."""
    return [b for b in map(as_block, content) if b.get("type") == "tool_use"]


def _detail(response: httpx2.Response) -> str:
    """The gateway's error message, or the start of whatever a proxy in between answered."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


class KeyhandClient:
    """One keyhand session seen from an agent loop: its tools, its tool calls, its ledger.

    Use as ``async with KeyhandClient(url, api_key, session_id) as keyhand:``.
    ``api_key`` may be None for a gateway started with ``--no-auth``.
    """

    def __init__(
        self, url: str = DEFAULT_URL, api_key: str | None = None, session_id: str | None = None, *, timeout: float = 300
    ) -> None:
        self.url = url
        self.base = api_base(url)
        self._api_key = api_key
        self._session_id = session_id
        self._timeout = httpx2.Timeout(30.0, read=timeout)
        self._stack = contextlib.AsyncExitStack()
        self._http: httpx2.AsyncClient | None = None
        self._mcp: ClientSession | None = None

    @property
    def session_id(self) -> str:
        if self._session_id is None:
            raise RuntimeError("KeyhandClient is not connected yet: use `async with KeyhandClient(...)`")
        return self._session_id

    async def __aenter__(self) -> KeyhandClient:
        try:
            await self._connect()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _connect(self) -> None:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._http = await self._stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=self._timeout))
        if self._session_id is None:
            self._session_id = str((await self._request("POST", "/v1/sessions"))["id"])
        else:
            await self._request("GET", f"/v1/sessions/{self._session_id}")  # fail early on a wrong id
        self._http.headers[SESSION_HEADER] = self._session_id
        read, write, *_ = await self._stack.enter_async_context(
            streamable_http_client(self.url, http_client=self._http)
        )
        self._mcp = await self._stack.enter_async_context(ClientSession(read, write))
        await self._mcp.initialize()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self._http is not None
        try:
            response = await self._http.request(method, self.base + path, **kwargs)
        except httpx2.TransportError as exc:
            raise KeyhandClientError(f"cannot reach the keyhand gateway at {self.base}: {exc}") from None
        if response.status_code == 401:
            raise KeyhandClientError("the gateway refused the API key (401); check --api-key / KEYHAND_API_KEY")
        if response.status_code >= 400:
            raise KeyhandClientError(f"{method} {path} failed with {response.status_code}: {_detail(response)}")
        return response.json()

    @property
    def mcp(self) -> ClientSession:
        if self._mcp is None:
            raise RuntimeError("KeyhandClient is not connected yet: use `async with KeyhandClient(...)`")
        return self._mcp

    async def tools(self) -> list[ToolParam]:
        """The session's tools as Anthropic tool definitions, ready for ``messages.create(tools=...)``."""
        listing: list[ToolParam] = []
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await self.mcp.list_tools(params=params)
            listing.extend(to_anthropic_tool(t) for t in page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return listing

    async def run_tool_use(self, block: Any) -> ToolResultBlockParam:
        """Run one ``tool_use`` block through keyhand; a ``tool_result`` block (errors as ``is_error``)."""
        use = as_block(block)
        try:
            result = await self.mcp.call_tool(use["name"], dict(use.get("input") or {}))
        except MCPError as exc:  # unknown tool, invalid params: the model should hear about it
            text = f"keyhand refused the call to {use['name']}: {exc.error.message}"
            return tool_result(use["id"], [{"type": "text", "text": text}], is_error=True)
        return tool_result(use["id"], to_anthropic_content(result), is_error=bool(result.is_error))

    async def run_tool_uses(self, content: Iterable[Any]) -> list[ToolResultBlockParam]:
        """Run every ``tool_use`` of an assistant message's content, in order; their ``tool_result`` blocks."""
        return [await self.run_tool_use(use) for use in tool_uses(content)]

    async def append(self, type: str, data: dict[str, Any]) -> Block:
        """Append one of the loop's own events (``user.*``, ``agent.*``, ``harness.*``, ``note.*``).

        Returns the stored event (with its ``seq``). Raises :class:`KeyhandClientError`
        when the gateway refuses it (for example a ``tool.*`` type, which only the gateway writes).
        """
        body = await self._request("POST", f"/v1/sessions/{self.session_id}/events", json={"type": type, "data": data})
        event: Block = body["events"][0]
        return event

    async def events(self, *, after: int = 0, types: Sequence[str] = (), limit: int = PAGE) -> list[Block]:
        """One slice of the session's ledger: up to ``limit`` events after seq ``after``."""
        params: dict[str, Any] = {"after": after, "limit": limit}
        if types:
            params["types"] = ",".join(types)
        body = await self._request("GET", f"/v1/sessions/{self.session_id}/events", params=params)
        events: list[Block] = body["events"]
        return events

    async def wait_for_event(self, types: Sequence[str], *, after: int, timeout: float) -> Block | None:
        """The first event of ``types`` after seq ``after``, following the live stream; None after ``timeout``."""
        url = f"{self.base}/v1/sessions/{self.session_id}/stream"
        params = {"after": str(after), "types": ",".join(types)}
        assert self._http is not None
        with anyio.move_on_after(timeout):
            async with self._http.stream("GET", url, params=params) as response:
                if response.status_code >= 400:
                    raise KeyhandClientError(f"GET {url} failed with {response.status_code}")
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        event: Block = json.loads(line.removeprefix("data: "))
                        return event
        return None

    async def all_events(self, *, after: int = 0) -> list[Block]:
        """Every event after seq ``after``, read a page at a time."""
        out: list[Block] = []
        while page := await self.events(after=after):
            out.extend(page)
            after = page[-1]["seq"]
            if len(page) < PAGE:
                break
        return out
