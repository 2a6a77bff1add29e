"""Declarative HTTP tools: a REST endpoint described in the config becomes a tool.

Arguments go where the config says: ``{name}`` placeholders in the URL (each
value percent-encoded as one path segment, so ``../`` cannot climb), ``query``
names into the query string, ``body`` names (or ``"rest"``: every argument not
used elsewhere) into a JSON body. The bound credential is injected at send time
by :class:`VaultAuth`, exactly as for upstream MCP servers. A JSON response also
comes back as ``structuredContent``.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2

from gateway.config import HttpToolConfig
from gateway.injection import VaultAuth
from gateway.upstream import Binding
from tools.base import Annotations, CallContext, ToolError, ToolResult, ToolSpec


class HttpTool:
    def __init__(self, config: HttpToolConfig, client: httpx2.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.binding = Binding(config.credential, config.inject, config.allow_unauthenticated)
        self.spec = ToolSpec(
            name=config.name,
            description=config.description,
            input_schema=config.input_schema,
            annotations=Annotations(
                read_only=config.read_only, destructive=not config.read_only, open_world=True, title=config.name
            ),
        )

    def build(self, args: Mapping[str, Any]) -> tuple[str, dict[str, str], Any]:
        cfg = self.config
        missing = [p for p in cfg.path_params if p not in args]
        if missing:
            raise ToolError(f"{cfg.name}: missing argument(s) for the URL: {', '.join(missing)}")
        url = cfg.url.format(**{p: urllib.parse.quote(str(args[p]), safe="") for p in cfg.path_params})
        query = {q: _as_text(args[q]) for q in cfg.query if q in args}
        used = set(cfg.path_params) | set(cfg.query)
        body: Any = None
        if cfg.body == "rest":
            body = {k: v for k, v in args.items() if k not in used}
        elif cfg.body:
            body = {k: args[k] for k in cfg.body if k in args}
        return url, query, body

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        url, query, body = self.build(args)
        grant = getattr(ctx, "credential", None)
        auth = VaultAuth(grant.fetch, grant.header) if grant is not None else None
        try:
            async with self.client.stream(
                self.config.method,
                url,
                params=query,
                json=body,
                headers=self.config.headers,
                auth=auth,
                timeout=self.config.timeout_s,  # fmt: skip
            ) as response:
                raw = await _read_capped(response, self.config.max_response_bytes)
        except httpx2.TimeoutException:
            raise ToolError(f"{self.config.name}: no answer within {self.config.timeout_s:g} s") from None
        except httpx2.TransportError as exc:
            raise ToolError(f"{self.config.name}: request failed: {exc}") from None
        return self.result(response, raw)

    def result(self, response: httpx2.Response, raw: bytes) -> ToolResult:
        text = raw.decode(response.encoding or "utf-8", errors="replace")
        if response.status_code >= 400:
            raise ToolError(f"{self.config.name}: HTTP {response.status_code}: {text[:2000]}")
        structured = None
        if re.search(r"[/+]json\b", response.headers.get("content-type", "")):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            structured = parsed if isinstance(parsed, dict) else {"items": parsed} if parsed is not None else None
        return ToolResult.text(text, structured=structured)


async def _read_capped(response: httpx2.Response, cap: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise ToolError(f"the response is over {cap} bytes; raise max_response_bytes to get it")
    return b"".join(chunks)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@contextlib.asynccontextmanager
async def http_tools(configs: list[HttpToolConfig]) -> AsyncIterator[list[HttpTool]]:
    """The configured HTTP tools, sharing one connection pool for as long as the context is open."""
    async with httpx2.AsyncClient(follow_redirects=False) as client:
        yield [HttpTool(cfg, client) for cfg in configs]
