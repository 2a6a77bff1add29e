"""``keyhand agent run`` works through ``write``, ``bash`` and ``read``; killed mid-task, ``resume`` finishes it.

The harness runs as a real process (``python -m gateway.cli agent ...``) against the
real gateway and a scripted model behind a real Messages API server; the
``anthropic`` SDK reaches it through ``ANTHROPIC_BASE_URL``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tests.agent_helpers import (
    MODEL,
    SANDBOX_TOOLS,
    agent_env,
    ledger,
    listed_tools,
    read_session_line,
    result_text,
    run_agent,
    session_in,
    start_agent,
    stop_agent,
    tool_calls,
    tool_results_in,
    types_of,
    wait_for_event,
)
from tests.conftest import Gateway
from tests.fake_anthropic import FakeMessagesApi, ServedApi, Turn, text, use

pytestmark = pytest.mark.anyio

TASK = "Write notes.txt, make an upper-case copy with bash, read it back and report how often the copy ran."


@pytest.fixture(scope="module")
def harness_key(gateway: Gateway) -> str:
    return gateway.create_key("harness-sandbox")


@pytest.fixture(autouse=True)
async def sandbox_tools(gateway: Gateway) -> None:
    missing = set(SANDBOX_TOOLS) - await listed_tools(gateway)
    assert not missing, f"the gateway does not offer {sorted(missing)}"


def script(*, hold: int | None = None) -> list[Turn]:
    turns = [
        Turn([text("Writing the notes."), use("write", file_path="/workspace/notes.txt", content="keyhand hands\n")]),
        Turn([use("bash", command="tr a-z A-Z < notes.txt > upper.txt && echo ran >> runs.log && wc -l < runs.log")]),
        Turn([use("read", file_path="upper.txt")]),
        Turn([use("bash", command="echo runs=$(wc -l < runs.log); cat upper.txt")]),
        Turn([text("Done: the copy ran once and says KEYHAND HANDS.")]),
    ]
    if hold is not None:
        turns[hold].hold = True
    return turns


def assert_one_coherent_history(events: list[dict[str, Any]]) -> None:
    """Every tool_use answered once, in order, each by exactly one gateway call."""
    uses = [b["id"] for e in events if e["type"] == "agent.message" for b in e["data"]["content"] if "id" in b]
    answered = [e["data"]["tool_use_id"] for e in events if e["type"] == "agent.tool_result"]
    started = [e["data"]["tool_use_id"] for e in events if e["type"] == "harness.tool_started"]
    assert uses == answered == started and len(set(uses)) == len(uses) == 4
    assert sorted(tool_calls(events).values()) == [1, 1, 1, 1]
    assert [e["data"]["tool"] for e in events if e["type"] == "tool.call"] == ["write", "bash", "read", "bash"]


async def test_a_task_runs_through_write_bash_and_read_and_every_step_is_in_the_ledger_in_order(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    with ServedApi(FakeMessagesApi(script())) as api:
        result = run_agent(gateway, agent_env(api, harness_key, tmp_path), "run", "--model", MODEL, TASK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Done: the copy ran once and says KEYHAND HANDS."
    (read_back,) = tool_results_in(api.requests[3])
    assert result_text(read_back).count("KEYHAND HANDS") == 1
    (last,) = tool_results_in(api.requests[4])
    assert "runs=1" in result_text(last)
    events = ledger(gateway, session_in(result.stderr))
    assert_one_coherent_history(events)
    step = ["agent.message", "harness.tool_started", "tool.call", "tool.result", "agent.tool_result"]
    kinds = [t for t in types_of(events) if not t.startswith("sandbox.")]
    assert kinds == [
        "session.created",
        "harness.started",
        "user.message",
        *step * 4,
        "agent.message",
        "harness.finished",
    ]


async def test_a_harness_killed_while_waiting_for_the_model_is_resumed_and_finishes_without_repeating_a_call(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    with ServedApi(FakeMessagesApi(script(hold=2))) as api:
        env = agent_env(api, harness_key, tmp_path)
        proc = start_agent(gateway, env, "run", "--model", MODEL, TASK)
        held = api.wait_for_requests(3)[-1]  # bash has run; the model "thinks" about turn 2
        code, err = stop_agent(proc, signal.SIGKILL)
        assert code == -signal.SIGKILL
        session = session_in(err)
        resumed = run_agent(gateway, env, "resume", session)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "Done: the copy ran once and says KEYHAND HANDS."
    assert api.turn_requests()[3]["messages"] == held["messages"]  # the conversation, rebuilt exactly
    (last,) = tool_results_in(api.requests[-1])
    assert "runs=1" in result_text(last)
    events = ledger(gateway, session)
    assert_one_coherent_history(events)
    assert gateway.cli("sessions", "verify", session).returncode == 0


async def test_a_harness_killed_during_a_tool_call_is_resumed_without_running_that_call_again(
    gateway: Gateway, harness_key: str, tmp_path: Path
) -> None:
    turns = [
        Turn([use("bash", command="echo started >> slow.log; sleep 4; echo finished >> slow.log")]),
        Turn([use("bash", command="echo starts=$(grep -c started slow.log)")]),
        Turn([text("Checked.")]),
    ]
    with ServedApi(FakeMessagesApi(turns)) as api:
        env = agent_env(api, harness_key, tmp_path)
        proc = start_agent(gateway, env, "run", "--model", MODEL, "run the slow step once")
        session = read_session_line(proc)
        wait_for_event(gateway, session, "tool.call")
        stop_agent(proc, signal.SIGKILL)
        resumed = run_agent(gateway, env, "resume", session)
    assert resumed.returncode == 0, resumed.stderr
    (slow_result,) = tool_results_in(api.turn_requests()[1])
    assert slow_result["tool_use_id"] == "toolu_00_0"
    assert "is_error" not in slow_result  # resume waited for the gateway to finish the call, and took its result
    (count,) = tool_results_in(api.turn_requests()[2])
    assert "starts=1" in result_text(count)
    events = ledger(gateway, session)
    slow = [e for e in events if e["type"] == "tool.call" and "slow.log; sleep" in e["data"]["arguments"]["command"]]
    assert len(slow) == 1
    (answer,) = [e for e in events if e["type"] == "agent.tool_result" and e["data"]["tool_use_id"] == "toolu_00_0"]
    assert answer["data"]["call_seq"] == slow[0]["seq"]
