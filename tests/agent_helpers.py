"""Running ``keyhand agent`` (and the example loop) as real processes against a gateway and a fake model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2

from tests.conftest import ROOT, Gateway
from tests.fake_anthropic import FakeMessagesApi

RUN_TIMEOUT_S = 90
MODEL = "fake-model-1"
SANDBOX_TOOLS = ("write", "bash", "read")


def agent_env(api: FakeMessagesApi, key: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "KEYHAND_"))}
    env.update(
        ANTHROPIC_API_KEY="sk-ant-fake-test-key",
        ANTHROPIC_BASE_URL=api.url,
        KEYHAND_API_KEY=key,
        KEYHAND_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    return env


def agent_cmd(gateway: Gateway, *args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "agent", *args, "--url", gateway.url]


def run_agent(gateway: Gateway, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``keyhand agent ARGS`` to completion (bounded)."""
    return subprocess.run(
        agent_cmd(gateway, *args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def start_agent(gateway: Gateway, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        agent_cmd(gateway, *args),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_agent(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> tuple[int, str]:
    """Send ``sig``, wait for the process to end (bounded); ``(exit code, stderr)``."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    return proc.returncode, err


def session_in(stderr: str) -> str:
    match = re.search(r"keyhand agent: session (\S+)", stderr)
    assert match, f"the harness did not print its session id: {stderr}"
    return match.group(1)


def ledger(gateway: Gateway, session_id: str) -> list[dict[str, Any]]:
    """Every event of a session, through the ledger HTTP API (admin key)."""
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    events: list[dict[str, Any]] = []
    while True:
        params = {"after": events[-1]["seq"] if events else 0, "limit": 1000}
        response = httpx2.get(f"{gateway.base}/v1/sessions/{session_id}/events", params=params, headers=headers)
        response.raise_for_status()
        page = response.json()["events"]
        events.extend(page)
        if len(page) < 1000:
            return events


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def tool_calls(events: list[dict[str, Any]]) -> Counter[str]:
    """How many times the gateway logged each (tool, arguments) call."""
    return Counter(
        f"{e['data']['tool']} {sorted(e['data']['arguments'].items())}" for e in events if e["type"] == "tool.call"
    )


def tool_results_in(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of a Messages API request's last user turn."""
    content = request["messages"][-1]["content"]
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def result_text(block: dict[str, Any]) -> str:
    content = block["content"]
    return content if isinstance(content, str) else "\n".join(b.get("text", "") for b in content)


async def listed_tools(gateway: Gateway) -> set[str]:
    """The tool names the gateway lists to an admin key (over MCP)."""
    async with gateway.client() as mcp:
        return {t.name for t in (await mcp.list_tools()).tools}


def wait_for_event(gateway: Gateway, session_id: str, type_: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """Follow the session's SSE stream until an event of ``type_`` arrives (bounded); that event."""
    headers = {"Authorization": f"Bearer {gateway.admin_key}"}
    url = f"{gateway.base}/v1/sessions/{session_id}/stream"
    with httpx2.stream("GET", url, headers=headers, timeout=httpx2.Timeout(timeout)) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line[len("data: ") :])
                if event["type"] == type_:
                    return event
    raise TimeoutError(f"the stream of {session_id} ended without a {type_} event")


def read_session_line(proc: subprocess.Popen[str]) -> str:
    """The session id the harness prints on stderr as soon as the session exists (read up to that line)."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "keyhand agent: session " in line:
            return session_in(line)
    raise AssertionError(f"the harness ended without naming its session: {''.join(seen)}")
