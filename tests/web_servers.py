"""Real web servers on 127.0.0.1 for the ``web_fetch`` and netguard tests, and a recording call context.

``serve(app)`` runs a Starlette app under uvicorn in a thread on a free port and
stops it afterwards. ``site_app`` is the site the fetch tests read; ``sink_app``
stands for a private service the guard must never let anything reach: it counts
every request it gets. ``MapResolver`` is the substitutable resolver: it answers
from a table and never asks real DNS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tools.netguard import IPAddress

START_TIMEOUT_S = 10.0
HOLD_S = 20.0


@dataclass
class Server:
    port: int
    hits: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def exception(self) -> str:
        """The narrow ``allow_private`` entry that lets the guard reach this server."""
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(build: Any, **tls: Any) -> Iterator[Server]:
    """Run ``build(server) -> ASGI app`` on 127.0.0.1, port 0, in a thread; stop it on exit.

    ``tls`` passes ``ssl_certfile``/``ssl_keyfile`` to uvicorn for an https server.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = Server(port=sock.getsockname()[1])
    config = uvicorn.Config(build(server), lifespan="off", log_level="warning", timeout_graceful_shutdown=1, **tls)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test web server did not start")
        time.sleep(0.005)
    try:
        yield server
    finally:
        server.release.set()
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


PAGE = """<!doctype html><html><head><title>Keyhand test page</title></head><body>
<nav><a href="/nav-only">Navigation link</a></nav>
<header>Site header</header>
<main><h1>Readable heading</h1>
<p>First paragraph with <a href="/other">a relative link</a> and <strong>bold words</strong>.</p>
<ul><li>one</li><li>two</li></ul></main>
<script>var hidden = "script text";</script>
<footer>Site footer</footer></body></html>"""


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF (ISO 32000-1 §7.5) whose page shows ``text`` in Helvetica."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


async def long(request: Request) -> Response:
    return Response("".join(f"line {i:04d}\n" for i in range(1000)), media_type="text/plain")


async def redirect(request: Request) -> Response:
    n = int(request.path_params["n"])
    return RedirectResponse(f"/redirect/{n - 1}" if n > 1 else "/page", status_code=302)


async def redirect_to(request: Request) -> Response:
    return RedirectResponse(request.query_params["url"], status_code=302)


async def big(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(int(request.query_params.get("chunks", "100"))):
            yield b"x" * 10_000

    return StreamingResponse(body(), media_type="text/plain")


async def declared_big(request: Request) -> Response:
    return Response(b"x" * 200_000, media_type="text/plain")


def fixed(body: bytes | str, media_type: str) -> Route:
    """A route ``/type-subtype`` that answers ``body`` labelled ``media_type``."""

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=media_type)

    return Route(f"/{media_type.replace('/', '-')}", endpoint)


FIXED = [
    fixed('{"answer": 42, "list": [1, 2]}', "application/json"),
    fixed("<?xml version='1.0'?><feed><item>x</item></feed>", "application/xml"),
    fixed(b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png"),
    fixed(bytes(range(256)), "application/octet-stream"),
    fixed(b"looks like text\x00\x01\x02 but is not", "text/plain"),
    fixed(minimal_pdf("Hello from a PDF"), "application/pdf"),
]


JS_PAGE = """<!doctype html><html><head><title>Script page</title></head><body>
<main><h1>Static heading</h1><p id="out">private fetch: not attempted</p><pre id="procs">PROCS</pre></main>
<script>
document.querySelector("main").insertAdjacentHTML("beforeend", "<p>Rendered by script</p>");
fetch("http://127.0.0.1:SINK/steal").then(r => "status " + r.status).catch(() => "failed")
  .then(t => { document.getElementById("out").textContent = "private fetch: " + t; });
</script></body></html>"""


def browser_processes() -> str:
    """``uid sandbox`` for every Chromium process of a keyhand render running right now."""
    rows = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if any(b"keyhand-render-" in arg for arg in cmdline) and b"--type=renderer" not in cmdline:
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            rows.append(f"uid={uid} no-sandbox={b'--no-sandbox' in cmdline}")
    return "\n".join(sorted(set(rows))) or "none"


async def js_page(request: Request) -> Response:
    sink = request.query_params.get("sink", "9")
    return HTMLResponse(JS_PAGE.replace("SINK", sink).replace("PROCS", browser_processes()))


def site_app(server: Server) -> Starlette:
    """The site under test: one route per behaviour the fetch tests look at."""

    async def page(request: Request) -> Response:
        server.hits.append(request.url.path)
        return HTMLResponse(request.app.state.page)

    async def echo(request: Request) -> Response:
        server.hits.append(request.url.path)
        client = request.client.host if request.client else ""
        return JSONResponse({"host": request.headers.get("host"), "client": client})

    async def hold(request: Request) -> Response:
        await anyio.to_thread.run_sync(server.release.wait, HOLD_S)
        return Response("too late", media_type="text/plain")

    async def drip(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"first bytes\n"
            await anyio.to_thread.run_sync(server.release.wait, HOLD_S)

        return StreamingResponse(body(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/page", page),
            Route("/echo", echo),
            Route("/hold", hold),
            Route("/drip", drip),
            Route("/long", long),
            Route("/js", js_page),
            Route("/redirect/{n:int}", redirect),
            Route("/to", redirect_to),
            Route("/big", big),
            Route("/declared-big", declared_big),
            *FIXED,
        ]
    )
    app.state.page = PAGE
    return app


def sink_app(server: Server) -> Starlette:
    """A stand-in for a private service: it records every request and answers a secret."""

    async def anything(request: Request) -> Response:
        server.hits.append(request.url.path)
        return Response("private secret", media_type="text/plain", headers={"Access-Control-Allow-Origin": "*"})

    return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])


@dataclass
class MapResolver:
    """A resolver answering from a table (every name's full answer, in order); unknown names fail."""

    table: dict[str, Sequence[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        if host not in self.table:
            raise LookupError(f"NXDOMAIN for {host} (test resolver)")
        return [ipaddress.ip_address(a) for a in self.table[host]]


@dataclass
class RecordingContext:
    """A :class:`tools.base.CallContext` that keeps the events a tool emits."""

    session_id: str = "sess-test"
    workspace: Path = Path("/nonexistent-workspace")
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        self.events.append((type, data))

    async def read_events(self, **kwargs: Any) -> list[dict[str, Any]]:
        return []

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        return None

    def refusals(self) -> list[dict[str, Any]]:
        return [data for kind, data in self.events if kind == "fetch.refused"]


@pytest.fixture(scope="module")
def site() -> Iterator[Server]:
    """The site under test (``site_app``), one per test module."""
    with serve(site_app) as server:
        yield server


@pytest.fixture(scope="module")
def sink() -> Iterator[Server]:
    """A private service that must never be reached (``sink_app``), one per test module."""
    with serve(sink_app) as server:
        yield server
