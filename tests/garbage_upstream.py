"""An HTTP server that speaks just enough MCP to list one tool, then answers the call with garbage."""

from __future__ import annotations

import json
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOOL = {"name": "broken", "description": "answers garbage", "inputSchema": {"type": "object"}}


async def mcp(request: Request) -> Response:
    if request.method != "POST":
        return Response(status_code=405)
    message = json.loads(await request.body())
    method = message.get("method")
    headers = {"mcp-session-id": "garbage-session"}
    if "id" not in message:
        return Response(status_code=202, headers=headers)
    if method == "initialize":
        result = {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "garbage", "version": "0"},
        }
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    else:
        return Response(b"\x00\xffthis is not json-rpc{{{", media_type="application/json", headers=headers)
    return JSONResponse({"jsonrpc": "2.0", "id": message["id"], "result": result}, headers=headers)


if __name__ == "__main__":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    app = Starlette(routes=[Route("/mcp", mcp, methods=["GET", "POST", "DELETE"])])
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
