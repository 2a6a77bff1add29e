"""The floor a Python MCP gateway cannot go below: an SDK server that forwards every call, nothing else.

    python bench/forwarder.py --upstream http://127.0.0.1:PORT/mcp --port PORT2

No auth, no ledger, no policy, no vault, no redaction: the MCP SDK's Streamable HTTP
server in front of one persistent SDK client session to the upstream. ``bench/proxy.py``
runs it beside Keyhand so the report can split Keyhand's added latency into "the two
SDK hops any such gateway pays" and "what Keyhand's pipeline adds on top".
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import mcp_types as types
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from starlette.applications import Starlette
from starlette.routing import Route


def build(upstream_url: str) -> Starlette:
    state: dict[str, ClientSession] = {}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return await state["up"].list_tools()

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return await state["up"].call_tool(params.name, params.arguments or {})

    server: Server[Any] = Server("forwarder", on_list_tools=list_tools, on_call_tool=call_tool)
    app = server.streamable_http_app(host="127.0.0.1")
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Starlette) -> AsyncIterator[None]:
        async with httpx2.AsyncClient() as http, streamable_http_client(upstream_url, http_client=http) as (r, w, *_):
            async with ClientSession(r, w) as up:
                await up.initialize()
                state["up"] = up
                async with inner(a):
                    yield

    return Starlette(routes=[Route("/mcp", app.routes[0].endpoint)], lifespan=lifespan)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(build(args.upstream), host="127.0.0.1", port=args.port, log_level="warning")
