"""A local forward proxy that puts every request of a headless browser through the network guard.

Chromium in ``render`` mode is started with ``--proxy-server`` pointing here (on
127.0.0.1, a fresh port per render) and ``--proxy-bypass-list=<-loopback>`` so
that not even loopback is reached directly. The page's document, subresources,
``fetch``/XHR and WebSockets all arrive here as one of two forms (RFC 9110 §9.3.6,
RFC 9112 §3.2.2):

- ``CONNECT host:port`` (https, wss): the guard checks ``host``, the tunnel is
  opened to the checked address (pinned) and TLS stays end to end, verified by
  Chromium against the original name;
- an absolute-form request ``GET http://host/path``: the guard checks the URL, the
  request is sent to the checked address in origin form with ``Connection: close``
  (one request per connection, so a kept-alive connection cannot carry a second
  request to a host that was never checked).

A refused request gets ``403`` and is recorded in :attr:`GuardProxy.blocked`; the
requests and bytes of one render are capped. The content-type allowlist does
not apply here: a page needs its scripts, styles and images.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketStream

from tools.netguard import FetchRefused, Guard, Target

MAX_HEAD = 64 * 1024
HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"upgrade"})


# Chromium's own background services (component updater, sign-in, time, safe browsing). Flags turn most of
# them off but not all; they are refused without being reported as requests of the page.
BROWSER_SERVICES = frozenset(
    {
        "accounts.google.com",
        "update.googleapis.com",
        "clients1.google.com",
        "clients2.google.com",
        "clientservices.googleapis.com",
        "safebrowsing.googleapis.com",
        "optimizationguide-pa.googleapis.com",
        "content-autofill.googleapis.com",
        "redirector.gvt1.com",
        "edgedl.me.gvt1.com",
    }
)


class ProxyRefusal(Exception):
    """A request the proxy will not carry (malformed, or over the render's caps)."""


class BrowserService(ProxyRefusal):
    """A request Chromium makes for itself, not for the page."""


@dataclass
class GuardProxy:
    """State of one proxy: its port, what it blocked and how much it carried."""

    guard: Guard
    max_requests: int
    max_bytes: int
    port: int = 0
    requests: int = 0
    bytes_in: int = 0
    blocked: list[tuple[str, str]] = field(default_factory=list)
    background: int = 0
    # Hosts refused quietly (not counted, not in ``blocked``); sandbox egress passes an empty set.
    ignored_hosts: frozenset[str] = BROWSER_SERVICES

    async def handle(self, client: SocketStream) -> None:
        async with client:
            url = "(unparsed request)"
            try:
                with anyio.fail_after(self.guard.settings.read_timeout_s):
                    head, rest = await _read_head(client)
                method, url, version, headers = _parse_head(head)
                target = await self._check(method, url)
                with anyio.fail_after(self.guard.settings.connect_timeout_s):
                    upstream = await _connect(target)
            except BrowserService as exc:
                self.background += 1
                await _send_refusal(client, str(exc))
                return
            except (FetchRefused, ProxyRefusal) as exc:
                reason = exc.reason if isinstance(exc, FetchRefused) else str(exc)
                self.blocked.append((url, reason))
                await _send_refusal(client, reason)
                return
            except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
                return
            async with upstream:
                if method == "CONNECT":
                    await client.send(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    await self._pipe(client, upstream, rest)
                else:
                    await upstream.send(_origin_form(method, target, version, headers) + rest)
                    await self._pipe(client, upstream, b"")

    async def _check(self, method: str, url: str) -> Target:
        host = (url if method == "CONNECT" else url.partition("://")[2]).split("/")[0].rsplit(":", 1)[0].lower()
        if host in self.ignored_hosts:
            raise BrowserService(f"{host} is a browser background service")
        self.requests += 1
        if self.requests > self.max_requests:
            raise ProxyRefusal(f"the page made more than {self.max_requests} requests (render.max_requests)")
        if method == "CONNECT":
            return await self.guard.check(f"https://{url}/")
        if not url.startswith("http://"):
            raise ProxyRefusal(f"only absolute http:// URLs and CONNECT are proxied, not {url[:80]!r}")
        return await self.guard.check(url)

    async def _pipe(self, client: ByteStream, upstream: ByteStream, pending: bytes) -> None:
        """Copy both ways until the server side ends (or the byte cap is hit)."""

        async def up() -> None:
            if pending:
                await upstream.send(pending)
            async for chunk in client:
                await upstream.send(chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(_quietly, up)
            with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                async for chunk in upstream:
                    self.bytes_in += len(chunk)
                    if self.bytes_in > self.max_bytes:
                        self.blocked.append(("(response)", f"the page received over {self.max_bytes} bytes"))
                        break
                    await client.send(chunk)
            tg.cancel_scope.cancel()


async def _quietly(copy: Callable[[], Awaitable[None]]) -> None:
    with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream, anyio.ClosedResourceError, OSError):
        await copy()


async def _read_head(client: ByteStream) -> tuple[bytes, bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise ProxyRefusal("the request head is larger than 64 KiB")
        buffer += await client.receive()
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[bytes, bytes]]]:
    request_line, *lines = head.split(b"\r\n")
    try:
        method, target, version = request_line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise ProxyRefusal("malformed request line") from None
    headers = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProxyRefusal("malformed header line")
        headers.append((name, value.strip()))
    return method, target, version, headers


def _origin_form(method: str, target: Target, version: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [f"{method} {target.target} {version}".encode("ascii")]
    lines += [name + b": " + value for name, value in headers if name.lower() not in HOP_HEADERS]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _connect(target: Target) -> SocketStream:
    """Connect to the first reachable checked address: never to anything resolved again."""
    error: OSError = OSError(f"no address for {target.host}")
    for ip in target.addresses:
        try:
            return await anyio.connect_tcp(str(ip), target.port)
        except OSError as exc:
            error = exc
    raise error


async def _send_refusal(client: ByteStream, reason: str) -> None:
    body = f"keyhand network guard refused this request: {reason}\n".encode()
    head = (
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(anyio.BrokenResourceError, OSError):
        await client.send(head.encode() + body)


@contextlib.asynccontextmanager
async def guard_proxy(guard: Guard, *, max_requests: int, max_bytes: int) -> AsyncIterator[GuardProxy]:
    """Serve a :class:`GuardProxy` on 127.0.0.1 (a free port) for the duration of the block."""
    proxy = GuardProxy(guard, max_requests=max_requests, max_bytes=max_bytes)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy.port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy.handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
