"""Guarded HTTP fetching: every hop checked by the :class:`~tools.netguard.Guard`, every connection pinned.

``httpx2`` sends the request with the original host in the URL, so the ``Host``
header (RFC 9110 §7.2), TLS SNI and certificate verification (RFC 6125) all use
the name the caller asked for. Underneath, :class:`PinnedBackend` replaces
httpcore's network backend: it never resolves anything, it connects to the
addresses the guard checked for that one host and port and refuses any other.

Redirects are followed by hand (RFC 9110 §15.4), at most ``max_redirects``, and
each ``Location`` goes through the full guard again. Bodies are read as a stream
and refused as soon as they pass ``max_bytes`` (after decompression, so a gzip
bomb does not help).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import anyio
import httpcore2
import httpx2

from tools.netguard import (
    ContentRefused,
    FetchFailed,
    FetchSettings,
    FetchTimeout,
    Guard,
    RedirectRefused,
    Target,
)

REDIRECTS = frozenset({301, 302, 303, 307, 308})


class PinnedBackend(httpcore2.AsyncNetworkBackend):
    """A network backend that connects only to the addresses a :class:`Target` was checked for."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        if host.strip("[]") != self._target.host or port != self._target.port:
            raise httpcore2.ConnectError(f"{host}:{port} is not the checked target; refusing to connect")
        error: Exception = httpcore2.ConnectError("no address to connect to")
        for ip in self._target.addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
        raise error

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


def _mapped(exc: Exception) -> Exception:
    for core, mapped in _EXCEPTIONS:
        if isinstance(exc, core):
            return mapped(str(exc))
    return exc


class _Stream(httpx2.AsyncByteStream):
    def __init__(self, inner: AsyncIterator[bytes], pool: httpcore2.AsyncConnectionPool) -> None:
        self._inner = inner
        self._pool = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpcore2.NetworkError as exc:
            raise _mapped(exc) from exc
        except httpcore2.TimeoutException as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        await self._pool.aclose()


class PinnedTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport for one checked :class:`Target` (a fresh pool per hop, never shared)."""

    def __init__(self, target: Target, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=PinnedBackend(target), max_connections=1, retries=0
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        core = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core)
        except (httpcore2.NetworkError, httpcore2.TimeoutException, httpcore2.ProtocolError) as exc:
            raise _mapped(exc) from exc
        if not isinstance(response.stream, AsyncIterable):
            raise TypeError("httpcore2 returned a synchronous stream to an async transport")
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Stream(aiter(response.stream), self._pool),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


@dataclass(slots=True)
class Fetched:
    """One fetched body and how it was reached."""

    url: str
    status: int
    media_type: str
    charset: str | None
    body: bytes
    redirects: list[str] = field(default_factory=list)


class Fetcher:
    """Fetches URLs through the guard: pinned connections, manual redirects, timeouts, byte cap."""

    def __init__(self, guard: Guard, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.guard = guard
        self.settings: FetchSettings = guard.settings
        self._ssl = ssl_context or ssl.create_default_context()

    async def fetch(self, url: str) -> Fetched:
        """Fetch ``url``; raises a :class:`~tools.netguard.FetchRefused` subclass or :class:`FetchFailed`."""
        try:
            with anyio.fail_after(self.settings.total_timeout_s):
                return await self._follow(url)
        except TimeoutError:
            raise FetchTimeout(
                url, f"the fetch took longer than total_timeout_s={self.settings.total_timeout_s}s"
            ) from None

    async def _follow(self, url: str) -> Fetched:
        redirects: list[str] = []
        while True:
            target = await self.guard.check(url)
            location, fetched = await self._hop(target)
            if location is None and fetched is not None:
                fetched.redirects = redirects
                return fetched
            if len(redirects) >= self.settings.max_redirects:
                raise RedirectRefused(url, f"more than {self.settings.max_redirects} redirects")
            redirects.append(url)
            url = urljoin(url, location or "")

    async def _hop(self, target: Target) -> tuple[str | None, Fetched | None]:
        s = self.settings
        timeout = httpx2.Timeout(s.read_timeout_s, connect=s.connect_timeout_s)
        headers = {"User-Agent": s.user_agent, "Accept": ", ".join(s.content_types) + ";q=0.9, */*;q=0.1"}
        transport = PinnedTransport(target, self._ssl)
        async with httpx2.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False) as client:
            try:
                async with client.stream("GET", target.request_url, headers=headers) as response:
                    if response.status_code in REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise RedirectRefused(target.url, f"HTTP {response.status_code} without a Location header")
                        return location, None
                    return None, await self._read(target, response)
            except httpx2.TimeoutException as exc:
                raise FetchTimeout(target.url, f"the server was too slow ({type(exc).__name__})") from None
            except httpx2.TransportError as exc:
                raise FetchFailed(f"could not fetch {target.url!r}: {type(exc).__name__}: {exc}") from None

    async def _read(self, target: Target, response: httpx2.Response) -> Fetched:
        if response.status_code >= 400:
            raise FetchFailed(f"{target.url!r} answered HTTP {response.status_code} {response.reason_phrase}")
        media_type, charset = _media_type(response.headers.get("content-type", ""))
        if media_type not in self.settings.content_types:
            raise ContentRefused(target.url, f"content type {media_type or 'none'!r} is not on the allowlist")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_bytes:
            raise ContentRefused(target.url, f"the body is {declared} bytes, over max_bytes={self.settings.max_bytes}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.settings.max_bytes:
                raise ContentRefused(target.url, f"the body is over max_bytes={self.settings.max_bytes}")
        return Fetched(target.url, response.status_code, media_type, charset, bytes(body))


def _media_type(header: str) -> tuple[str, str | None]:
    """RFC 9110 §8.3.1: ``type/subtype`` lower-cased, and the ``charset`` parameter if any."""
    media, *params = (p.strip() for p in header.split(";"))
    charset = next((p.split("=", 1)[1].strip("\"' ") for p in params if p.lower().startswith("charset=")), None)
    return media.lower(), charset
