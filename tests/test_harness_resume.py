"""``keyhand agent resume`` rebuilds the conversation from the ledger and never repeats a tool call.

These scenarios use only the ledger's own tool (``session_events``), so they hold
whatever sandbox tools the gateway offers; ``test_harness.py`` runs the same
story with ``write``, ``bash`` and ``read``.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from gateway.client import KeyhandClient
from tests.agent_helpers import (
    MODEL,
    agent_env,
    ledger,
    result_text,
    run_agent,
    session_in,
    start_agent,
    stop_agent,
    tool_calls,
    tool_results_in,
    types_of,
)
from tests.conftest import Gateway
from tests.fake_anthropic import FakeMessagesApi, ServedApi, Turn, text, use

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def harness_key(gateway: Gateway) -> str:
    return gateway.create_key("harness-resume")


async def test_ctrl_c_stops_the_harness_cleanly_and_resume_finishes_the_task_without_repeating_a_call(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    turns = [
        Turn([text("Looking at my log."), use("session_events", last=1)]),
        Turn([use("session_events", types=["user.*"])]),
        Turn([use("session_events", types=["agent.message"])], hold=True),
        Turn([text("All three reads done.")]),
    ]
    with ServedApi(FakeMessagesApi(turns)) as api:
        env = agent_env(api, harness_key, tmp_path)
        proc = start_agent(gateway, env, "run", "--model", MODEL, "read your own log three ways")
        held = api.wait_for_requests(3)[-1]
        code, err = stop_agent(proc, signal.SIGINT)
        assert code == 130, err
        assert "interrupted" in err
        session = session_in(err)
        resumed = run_agent(gateway, env, "resume", session)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "All three reads done."
    after = api.turn_requests()[3]
    assert after["messages"] == held["messages"]  # rebuilt exactly from the ledger
    events = ledger(gateway, session)
    assert set(tool_calls(events).values()) == {1} and sum(tool_calls(events).values()) == 3
    kinds = types_of(events)
    assert kinds.index("harness.interrupted") < kinds.index("harness.resumed") < kinds.index("harness.finished")
    assert gateway.cli("sessions", "verify", session).returncode == 0


async def test_a_tool_that_ran_before_the_harness_died_is_answered_from_the_ledger_not_run_again(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    """The harness died after the gateway ran the call but before it logged ``agent.tool_result``."""
    tool_use = {"type": "tool_use", "id": "toolu_dead_0", "name": "session_events", "input": {"types": ["user.*"]}}
    async with KeyhandClient(gateway.url, harness_key) as kh:
        await kh.append("harness.started", {"model": MODEL, "task": "check", "system": "s", "max_tokens": 256})
        await kh.append("user.message", {"content": "check"})
        message = {"content": [text("Checking."), tool_use], "model": MODEL, "stop_reason": "tool_use", "usage": {}}
        await kh.append("agent.message", message)
        await kh.append("harness.tool_started", {"tool_use_id": "toolu_dead_0", "name": "session_events"})
        ran = await kh.run_tool_use(tool_use)  # ... and here the harness died
        session = kh.session_id
    with ServedApi(FakeMessagesApi([Turn([text("Checked.")])])) as api:
        resumed = run_agent(gateway, agent_env(api, harness_key, tmp_path), "resume", session)
    assert resumed.returncode == 0, resumed.stderr
    (answer,) = tool_results_in(api.requests[0])
    assert answer["tool_use_id"] == "toolu_dead_0"
    assert result_text(answer) == result_text(ran)
    events = ledger(gateway, session)
    assert sum(tool_calls(events).values()) == 1
    (logged,) = [e for e in events if e["type"] == "agent.tool_result"]
    assert logged["data"]["call_seq"] == next(e["seq"] for e in events if e["type"] == "tool.call")


async def test_resuming_a_finished_session_asks_nothing_and_a_new_message_continues_it(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    async with KeyhandClient(gateway.url, harness_key) as kh:
        await kh.append("harness.started", {"model": MODEL, "task": "hi", "system": "s", "max_tokens": 256})
        await kh.append("user.message", {"content": "hi"})
        await kh.append("agent.message", {"content": [text("Hello.")], "model": MODEL, "stop_reason": "end_turn"})
        await kh.append("harness.finished", {"reason": "end_turn"})
        session = kh.session_id
    with ServedApi(FakeMessagesApi([Turn([text("Bye.")])])) as api:
        env = agent_env(api, harness_key, tmp_path)
        idle = run_agent(gateway, env, "resume", session)
        assert idle.returncode == 0 and api.requests == []
        follow = run_agent(gateway, env, "resume", session, "now say bye")
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.strip() == "Bye."
    roles = [(m["role"], m["content"]) for m in api.requests[0]["messages"]]
    assert roles == [("user", "hi"), ("assistant", [text("Hello.")]), ("user", "now say bye")]


def test_running_out_of_turns_stops_with_exit_3_and_resume_carries_on(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    turns = [Turn([use("session_events", last=1)]), Turn([use("session_events", last=2)]), Turn([text("Done.")])]
    with ServedApi(FakeMessagesApi(turns)) as api:
        env = agent_env(api, harness_key, tmp_path)
        first = run_agent(gateway, env, "run", "--model", MODEL, "--max-turns", "1", "go")
        assert first.returncode == 3, first.stderr
        session = session_in(first.stderr)
        assert f"keyhand agent resume {session}" in first.stderr
        rest = run_agent(gateway, env, "resume", session)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.strip() == "Done."
    assert sum(tool_calls(ledger(gateway, session)).values()) == 2


def test_resuming_an_unknown_session_fails_with_a_clear_message(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    with ServedApi(FakeMessagesApi([])) as api:
        result = run_agent(gateway, agent_env(api, harness_key, tmp_path), "resume", "no-such-session")
    assert result.returncode == 2
    assert "404" in result.stderr and "no-such-session" in result.stderr


def test_a_missing_model_api_key_is_refused_before_any_session_is_created(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    with ServedApi(FakeMessagesApi([])) as api:
        env = agent_env(api, harness_key, tmp_path)
        del env["ANTHROPIC_API_KEY"]
        result = run_agent(gateway, env, "run", "--model", MODEL, "anything")
    assert result.returncode == 1
    assert "ANTHROPIC_API_KEY" in result.stderr
    assert "session" not in result.stderr
