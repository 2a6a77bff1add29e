"""The guard proxy on its own (what Chromium, and later sandbox egress, talks to), driven with raw HTTP."""

from __future__ import annotations

import anyio
import pytest

from tests.web_servers import MapResolver, Server
from tools.browse_proxy import GuardProxy, guard_proxy
from tools.netguard import FetchSettings, Guard

pytestmark = pytest.mark.anyio

SITE = "proxy.keyhand-tests.example"


def guard_for(site: Server) -> Guard:
    return Guard(FetchSettings(allow_private=[site.exception]), MapResolver({SITE: ["127.0.0.1"]}))


async def exchange(proxy: GuardProxy, request: bytes) -> bytes:
    """Send one raw request to the proxy and read until it closes (bounded)."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", proxy.port) as stream:
            await stream.send(request)
            data = b""
            try:
                async for chunk in stream:
                    data += chunk
            except anyio.BrokenResourceError:
                pass
            return data


async def test_an_absolute_form_request_to_an_allowed_host_is_forwarded_to_the_checked_address(site: Server) -> None:
    async with guard_proxy(guard_for(site), max_requests=10, max_bytes=1_000_000) as proxy:
        host = f"{SITE}:{site.port}"
        reply = await exchange(proxy, f"GET http://{host}/echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 200") and f'"host":"{host}"'.encode() in reply
    assert proxy.blocked == []


@pytest.mark.parametrize(
    "request_line",
    [
        "GET http://127.0.0.1:{P}/admin HTTP/1.1",
        "GET http://2130706433:{P}/admin HTTP/1.1",
        "CONNECT 127.0.0.1:{P} HTTP/1.1",
        "CONNECT [::1]:{P} HTTP/1.1",
        "CONNECT localhost:{P} HTTP/1.1",
        "CONNECT 169.254.169.254:80 HTTP/1.1",
        "GET /relative HTTP/1.1",
        "GET ftp://example.com/ HTTP/1.1",
    ],
)
async def test_a_request_to_a_private_place_gets_403_and_never_reaches_it(
    site: Server, sink: Server, request_line: str
) -> None:
    line = request_line.replace("{P}", str(sink.port))
    async with guard_proxy(guard_for(site), max_requests=10, max_bytes=1_000_000) as proxy:
        reply = await exchange(proxy, f"{line}\r\nHost: x\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403") and b"refused" in reply
    assert len(proxy.blocked) == 1 and sink.hits == []


async def test_requests_past_the_render_cap_are_refused(site: Server) -> None:
    async with guard_proxy(guard_for(site), max_requests=1, max_bytes=1_000_000) as proxy:
        host = f"{SITE}:{site.port}"
        request = f"GET http://{host}/echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        first, second = await exchange(proxy, request), await exchange(proxy, request)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 403")
    assert "max_requests" in proxy.blocked[0][1]
