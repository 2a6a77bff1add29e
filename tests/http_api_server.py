"""A small real REST API for the HTTP-tool tests: it records what it received and can leak it back."""

from __future__ import annotations

import json
import socket

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


async def issues(request: Request) -> Response:
    received = {
        "path": request.scope["raw_path"].decode(),
        "owner": request.path_params["owner"],
        "query": dict(request.query_params),
        "authorization": request.headers.get("authorization"),
        "x_api_key": request.headers.get("x-api-key"),
    }
    if request.method == "POST":
        received["body"] = json.loads(await request.body())
        return JSONResponse(received, status_code=201)
    return JSONResponse(received)


async def forbidden(request: Request) -> Response:
    return PlainTextResponse(f"no access for {request.headers.get('authorization')}", status_code=403)


if __name__ == "__main__":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    app = Starlette(
        routes=[
            Route("/repos/{owner:path}/issues", issues, methods=["GET", "POST"]),
            Route("/forbidden", forbidden),
        ]
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
