"""The listening socket: responses leave at once instead of waiting out a delayed ACK."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.serve import bind

pytestmark = pytest.mark.anyio


async def test_accepted_connections_have_nagle_off() -> None:
    # Without TCP_NODELAY a JSON response (headers, then body) sat ~40 ms in the kernel per call.
    sock = bind("127.0.0.1", 0)
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn: socket.socket = writer.get_extra_info("socket")
        seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        assert await asyncio.wait_for(seen, 5) != 0
        writer.close()
