"""The sandbox tools through the real MCP endpoint with the official SDK client.

The gateway lists ``bash`` and the file tools (``gateway/builtin.py`` wires ``tools.shell`` and
``tools.files``); a gateway that does not fails these tests.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import anyio
import pytest

from tests.conftest import Gateway, text_of
from tests.test_sandbox_containment import COUNT_PROCESSES, FORK_BOMB
from tools.sandbox.cgroup import create_cgroup

pytestmark = pytest.mark.anyio


async def sandbox_tools_listed(mcp: Any) -> None:
    names = {t.name for t in (await mcp.list_tools()).tools}
    assert {"bash", "read", "write", "edit", "glob", "grep"} <= names


async def event_types(mcp: Any) -> list[str]:
    result = await mcp.call_tool("session_events", {"types": ["sandbox.*"]})
    return [e["type"] for e in result.structured_content["events"]]


async def test_bash_runs_in_a_persistent_unprivileged_sandbox_provisioned_on_first_use(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        await sandbox_tools_listed(mcp)
        assert await event_types(mcp) == []
        await mcp.call_tool("bash", {"command": "mkdir -p src && cd src && export WHO=agent"})
        result = await mcp.call_tool("bash", {"command": 'echo "$WHO $(id -u) $PWD"'})
        assert text_of(result).startswith("agent 1000 /workspace/src")
        assert await event_types(mcp) == ["sandbox.provisioned"]


async def test_the_gateway_home_is_invisible_from_bash(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        await sandbox_tools_listed(mcp)
        result = await mcp.call_tool("bash", {"command": f"cat {gateway.home}/admin.key; ls {gateway.home}"})
    assert gateway.admin_key not in text_of(result)
    assert text_of(result).count("No such file or directory") == 2


async def test_file_tools_and_bash_share_the_workspace(gateway: Gateway) -> None:
    async with gateway.client() as mcp:
        await sandbox_tools_listed(mcp)
        await mcp.call_tool("write", {"file_path": "/workspace/notes/a.txt", "content": "one\ntwo\n"})
        await mcp.call_tool("edit", {"file_path": "notes/a.txt", "old_string": "two", "new_string": "three"})
        shown = await mcp.call_tool("bash", {"command": "cat notes/a.txt"})
        found = await mcp.call_tool("glob", {"pattern": "**/*.txt"})
    assert text_of(shown).startswith("one\nthree")
    assert "/workspace/notes/a.txt" in text_of(found)


async def test_a_sandbox_killed_from_inside_is_a_tool_error_logged_as_lost_and_the_next_call_works(
    gateway: Gateway,
) -> None:
    async with gateway.client() as mcp:
        await sandbox_tools_listed(mcp)
        await mcp.call_tool("write", {"file_path": "kept.txt", "content": "kept\n"})
        lost = await mcp.call_tool("bash", {"command": "kill -9 -1"})
        again = await mcp.call_tool("bash", {"command": "cat kept.txt"})
        types = await event_types(mcp)
    assert lost.is_error and "sandbox was lost" in text_of(lost)
    assert text_of(again).startswith("kept")
    assert types == ["sandbox.provisioned", "sandbox.lost", "sandbox.provisioned"]


def fork_bombs_are_contained_here() -> bool:
    """As root only a pids cgroup stops a fork bomb (RLIMIT_NPROC does not bind root)."""
    if os.geteuid() != 0:
        return True
    probe = create_cgroup(f"keyhand-probe-{uuid.uuid4().hex[:8]}", pids=16, memory_bytes=64 << 20)
    if probe is None:
        return False
    probe.remove()
    return True


async def test_a_fork_bomb_is_stopped_and_the_gateway_keeps_answering_other_sessions(gateway: Gateway) -> None:
    if not fork_bombs_are_contained_here():
        pytest.skip("running as root without a writable pids cgroup: nothing would stop a fork bomb here")
    outcome: list[Any] = []
    async with gateway.client() as bomber, gateway.client() as bystander:
        await sandbox_tools_listed(bomber)

        async def bomb() -> None:
            outcome.append(await bomber.call_tool("bash", {"command": FORK_BOMB, "timeout_ms": 10_000}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(bomb)
            answer = await bystander.call_tool("bash", {"command": "echo still here"})
        after = await bomber.call_tool("bash", {"command": COUNT_PROCESSES, "restart": True})
    assert text_of(answer).startswith("still here")
    assert "Resource temporarily unavailable" in text_of(outcome[0])
    assert int(text_of(after).split()[0]) <= 4


async def test_no_network_from_bash(gateway: Gateway) -> None:
    port = int(gateway.base.rsplit(":", 1)[1])
    script = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)"
    async with gateway.client() as mcp:
        await sandbox_tools_listed(mcp)
        result = await mcp.call_tool("bash", {"command": f'python3 -c "{script}" 2>&1 | tail -1'})
    assert "ConnectionRefusedError" in text_of(result)
