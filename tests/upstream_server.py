"""A real upstream MCP server for the credential-proxy tests (MCP SDK v2, Streamable HTTP or stdio).

The credential it received is the ``Authorization`` header (HTTP) or the
``UPSTREAM_TOKEN`` environment variable (stdio). Tools:

  echo(text)          returns text
  whoami()            returns the credential it received, verbatim
  leak()              returns that credential in every encoding, across several content blocks
                      and in structured content: the redactor must scrub all of it
  leak_error()        fails with the credential inside the error message
  slow(seconds)       sleeps, with progress notifications
  crash()             kills this server process mid-call
  add_tool()          registers a new tool and sends notifications/tools/list_changed

Usage: python -m tests.upstream_server [--transport stdio]   (HTTP prints "PORT <n>")
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import urllib.parse

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent


def received(ctx: Context) -> str:
    """The credential of this call; every one seen is also appended to $UPSTREAM_RECORD for the tests."""
    headers = ctx.headers or {}
    value = headers.get("authorization") or os.environ.get("UPSTREAM_TOKEN", "")
    client = getattr(ctx.request_context.request, "client", None)  # HTTP: the TCP connection it came on
    record = os.environ.get("UPSTREAM_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"credential": value, "headers": dict(headers), "peer": client and client.port}) + "\n")
    return value


def raw_secret(credential: str) -> str:
    return credential.split(" ", 1)[1] if credential.startswith("Bearer ") else credential


def build() -> MCPServer:
    mcp = MCPServer("test-upstream")

    @mcp.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @mcp.tool()
    def whoami(ctx: Context) -> str:
        """Return the credential this server received for this call."""
        return received(ctx)

    @mcp.tool()
    def leak(ctx: Context) -> CallToolResult:
        """Echo the received credential back in every form a careless server might."""
        s = raw_secret(received(ctx))
        b = s.encode()
        forms = {
            "plain": s,
            "base64": base64.b64encode(b).decode(),
            "base64url": base64.urlsafe_b64encode(b).decode().rstrip("="),
            "embedded_base64": base64.b64encode(b"user=x;token=" + b + b";end").decode(),
            "urlencoded": urllib.parse.quote(s, safe=""),
            "hex": b.hex(),
            "json_escaped": json.dumps(s)[1:-1],
            "header": received(ctx),
        }
        blocks = [TextContent(type="text", text=f"{k}: {v}") for k, v in forms.items()]
        return CallToolResult(content=blocks, structured_content={"forms": forms})

    @mcp.tool()
    def leak_error(ctx: Context) -> str:
        """Fail with the credential in the error message."""
        raise ValueError(f"upstream rejected token {raw_secret(received(ctx))}")

    @mcp.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        """Sleep, reporting progress each tenth; a cancellation is recorded in $UPSTREAM_RECORD."""
        try:
            for i in range(10):
                await ctx.report_progress(i, 10, f"step {i}")
                await anyio.sleep(seconds / 10)
        except anyio.get_cancelled_exc_class():
            record = os.environ.get("UPSTREAM_RECORD")
            if record:
                with open(record, "a") as fh:
                    fh.write(json.dumps({"credential": "", "cancelled": "slow"}) + "\n")
            raise
        return "done"

    @mcp.tool()
    def crash() -> str:
        """Die in the middle of the call."""
        os._exit(3)

    @mcp.tool()
    async def add_tool(ctx: Context) -> str:
        """Add a tool named `added` and tell the client the list changed."""

        def added() -> str:
            """A tool that did not exist at first."""
            return "added works"

        mcp.add_tool(added, name="added")
        await ctx.request_context.session.send_tool_list_changed()  # legacy-era notification
        return "added"

    return mcp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transport", choices=["http", "stdio"], default="http")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = build()
    if args.transport == "stdio":
        server.run("stdio")
        return
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
