"""Declarative HTTP tools: a REST API becomes a tool, called with the vault's token, scrubbed on the way back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, Gateway, StartGateway, text_of
from tests.proxy_helpers import SECRET, add_secret

pytestmark = pytest.mark.anyio


@pytest.fixture
def api() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.http_api_server"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def config(api: str) -> dict[str, Any]:
    return {
        "http_tools": [
            {
                "name": "list_issues",
                "description": "List a repository's issues.",
                "input_schema": {
                    "type": "object",
                    "properties": {"owner": {"type": "string"}, "state": {"type": "string"}},
                    "required": ["owner"],
                },
                "url": api + "/repos/{owner}/issues",
                "query": ["state"],
                "credential": "tracker",
                "read_only": True,
            },
            {
                "name": "create_issue",
                "description": "Create an issue.",
                "method": "POST",
                "url": api + "/repos/{owner}/issues",
                "body": "rest",
                "credential": "tracker",
            },
            {"name": "forbidden", "description": "Always 403.", "url": api + "/forbidden", "credential": "tracker"},
        ],
        "agents": {"default": {"tools": {"*": "allow"}}},
    }


def start(start_gateway: StartGateway, api: str) -> tuple[Gateway, str]:
    keys: dict[str, str] = {}

    def prepare(gw: Gateway) -> None:
        add_secret(gw, "tracker", SECRET)
        keys["alice"] = gw.create_key("alice")

    return start_gateway(config(api), prepare=prepare), keys["alice"]


async def test_an_http_tool_fills_path_and_query_injects_the_token_and_returns_structured_json(
    start_gateway: StartGateway, api: str
) -> None:
    gw, alice = start(start_gateway, api)
    async with gw.client(alice) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        result = await mcp.call_tool("list_issues", {"owner": "a/../b", "state": "open"})
    assert tools["list_issues"].annotations.read_only_hint is True
    data = result.structured_content
    assert data["path"] == "/repos/a%2F..%2Fb/issues"  # one path segment, no climbing
    assert data["query"] == {"state": "open"}
    assert data["authorization"] == "Bearer [REDACTED:tracker]"  # it was sent, and scrubbed coming back
    assert SECRET not in text_of(result)


async def test_an_http_tool_sends_the_rest_of_the_arguments_as_a_json_body(
    start_gateway: StartGateway, api: str
) -> None:
    gw, alice = start(start_gateway, api)
    async with gw.client(alice) as mcp:
        result = await mcp.call_tool("create_issue", {"owner": "acme", "title": "Bug", "labels": ["x"]})
    assert result.structured_content["body"] == {"title": "Bug", "labels": ["x"]}


async def test_an_http_error_is_a_tool_error_with_the_status_and_no_secret(
    start_gateway: StartGateway, api: str
) -> None:
    gw, alice = start(start_gateway, api)
    async with gw.client(alice) as mcp:
        result = await mcp.call_tool("forbidden", {})
    assert result.is_error
    assert "HTTP 403" in text_of(result)
    assert SECRET not in text_of(result) and "[REDACTED:" in text_of(result)


async def test_http_tools_ask_by_default(start_gateway: StartGateway, api: str) -> None:
    cfg = config(api)
    del cfg["agents"]
    gw = start_gateway(cfg, prepare=lambda g: add_secret(g, "tracker", SECRET, owner="shared"))
    async with gw.client() as mcp:
        result = await mcp.call_tool("list_issues", {"owner": "acme"})
    assert result.is_error and "needs approval" in text_of(result)
