"""``KeyhandClient``: an ``anthropic`` loop gets keyhand's tools, runs tool uses through it, logs its messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from anthropic.types import TextBlock, ToolUseBlock

from gateway.client import KeyhandClient, KeyhandClientError, api_base
from tests.agent_helpers import MODEL, RUN_TIMEOUT_S, agent_env, ledger, tool_calls, types_of
from tests.conftest import ROOT, Gateway
from tests.fake_anthropic import FakeMessagesApi, ServedApi, Turn, text, use

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def key(gateway: Gateway) -> str:
    return gateway.create_key("client-tests")


def test_the_api_base_is_the_mcp_url_without_its_mcp_path() -> None:
    assert api_base("http://127.0.0.1:8765/mcp") == "http://127.0.0.1:8765"
    assert api_base("https://gw.example/keyhand/mcp/") == "https://gw.example/keyhand"


async def test_tools_are_anthropic_tool_definitions_of_the_session(gateway: Gateway, key: str) -> None:
    async with KeyhandClient(gateway.url, key) as keyhand:
        tools = {t["name"]: t for t in await keyhand.tools()}
    assert set(tools["session_events"]) == {"name", "description", "input_schema"}
    assert tools["session_events"]["input_schema"]["type"] == "object"
    assert tools["session_events"]["description"]


async def test_tool_uses_from_sdk_blocks_or_dicts_run_in_order_and_come_back_as_tool_results(
    gateway: Gateway, key: str
) -> None:
    content = [
        TextBlock(type="text", text="Let me look."),
        ToolUseBlock(type="tool_use", id="toolu_a", name="session_events", input={"last": 1}),
        {"type": "tool_use", "id": "toolu_b", "name": "session_events", "input": {"types": ["tool.call"]}},
    ]
    async with KeyhandClient(gateway.url, key) as keyhand:
        results = await keyhand.run_tool_uses(content)
        session = keyhand.session_id
    assert [(r["type"], r["tool_use_id"], r.get("is_error", False)) for r in results] == [
        ("tool_result", "toolu_a", False),
        ("tool_result", "toolu_b", False),
    ]
    assert session in results[0]["content"][0]["text"]  # type: ignore[index]  # content is a list of text blocks
    assert [e["data"]["arguments"] for e in ledger(gateway, session) if e["type"] == "tool.call"] == [
        {"last": 1},
        {"types": ["tool.call"]},
    ]


async def test_an_unknown_tool_and_bad_arguments_come_back_as_error_results_the_model_can_read(
    gateway: Gateway, key: str
) -> None:
    async with KeyhandClient(gateway.url, key) as keyhand:
        unknown, bad = await keyhand.run_tool_uses(
            [use("no_such_tool") | {"id": "toolu_x"}, use("session_events", limit="ten") | {"id": "toolu_y"}]
        )
        (fine,) = await keyhand.run_tool_uses([use("session_events") | {"id": "toolu_z"}])
    assert unknown["is_error"] is True and "no_such_tool" in unknown["content"][0]["text"]  # type: ignore[index]
    assert bad["is_error"] is True and "limit" in bad["content"][0]["text"]  # type: ignore[index]
    assert "is_error" not in fine


async def test_the_loop_appends_its_own_messages_and_may_not_forge_the_gateways_events(
    gateway: Gateway, key: str
) -> None:
    async with KeyhandClient(gateway.url, key) as keyhand:
        event = await keyhand.append("user.message", {"content": "hello"})
        with pytest.raises(KeyhandClientError, match="400"):
            await keyhand.append("tool.result", {"content": "forged"})
        events = await keyhand.events()
    assert event["type"] == "user.message"
    assert types_of(events) == ["session.created", "user.message"]


async def test_a_second_client_with_the_session_id_reattaches_to_the_same_session(gateway: Gateway, key: str) -> None:
    async with KeyhandClient(gateway.url, key) as first:
        await first.append("note.added", {"text": "from the first process"})
        session = first.session_id
    async with KeyhandClient(gateway.url, key, session) as second:
        await second.run_tool_uses([use("session_events") | {"id": "toolu_1"}])
        assert second.session_id == session
    assert types_of(ledger(gateway, session)) == ["session.created", "note.added", "tool.call", "tool.result"]


async def test_a_wrong_api_key_or_a_foreign_session_fails_on_connect_without_echoing_the_key(
    gateway: Gateway, key: str
) -> None:
    with pytest.raises(KeyhandClientError, match="401") as wrong:
        async with KeyhandClient(gateway.url, "kh_not_a_real_key"):
            pass
    assert "kh_not_a_real_key" not in str(wrong.value)
    async with KeyhandClient(gateway.url, gateway.admin_key) as admin:
        admins_session = admin.session_id
    with pytest.raises(KeyhandClientError, match="404"):
        async with KeyhandClient(gateway.url, key, admins_session):
            pass


async def test_the_minimal_example_loop_runs_a_task_through_keyhand(gateway: Gateway, key: str, tmp_path: Path) -> None:
    turns = [
        Turn([text("Checking the log."), use("session_events", types=["user.message"])]),
        Turn([text("The example loop is done.")]),
    ]
    with ServedApi(FakeMessagesApi(turns)) as api:
        env = agent_env(api, key, tmp_path) | {"KEYHAND_URL": gateway.url, "KEYHAND_MODEL": MODEL}
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "minimal_loop.py"), "what did I ask?"],
            env=env | {"PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The example loop is done."
    session = result.stderr.split("session ", 1)[1].split()[0]
    events = ledger(gateway, session)
    assert types_of(events) == [
        "session.created",
        "user.message",
        "agent.message",
        "tool.call",
        "tool.result",
        "agent.message",
    ]
    assert sum(tool_calls(events).values()) == 1
    assert "what did I ask?" in api.requests[1]["messages"][-1]["content"][0]["content"][0]["text"]
