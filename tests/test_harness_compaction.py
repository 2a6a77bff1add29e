"""Near its context budget the harness compacts: a summary event, a fresh start, the ledger still whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agent_helpers import MODEL, agent_env, ledger, result_text, run_agent, tool_results_in
from tests.conftest import Gateway, text_of
from tests.fake_anthropic import FakeMessagesApi, ServedApi, Turn, text, use

pytestmark = pytest.mark.anyio

TASK = "find the first thing you were told"


async def test_a_small_context_budget_compacts_into_a_ledger_event_and_earlier_events_stay_readable(
    gateway: Gateway, tmp_path: Path
) -> None:
    turns = [
        Turn([use("session_events", last=2)]),
        Turn([use("session_events", types=["tool.*"])]),
        Turn(
            [
                text("My context was compacted; reading the start of the ledger."),
                use("session_events", after=0, limit=3),
            ]
        ),
        Turn([text("Found it.")]),
    ]
    key = gateway.create_key("harness-compaction")
    with ServedApi(FakeMessagesApi(turns)) as api:
        result = run_agent(
            gateway, agent_env(api, key, tmp_path), "run", "--model", MODEL, "--context-budget", "1", TASK
        )
    assert result.returncode == 0, result.stderr
    session = result.stderr.split("keyhand agent: session ", 1)[1].split()[0]
    events = ledger(gateway, session)
    compactions = [e for e in events if e["type"] == "agent.compaction"]
    assert compactions, "no agent.compaction event"
    first = compactions[0]
    assert first["data"]["summary"] == api.summary
    assert first["data"]["through_seq"] == first["seq"] - 1

    summary_requests = [r for r in api.requests if r.get("tool_choice") == {"type": "none"}]
    assert "Summarise" in json.dumps(summary_requests[0]["messages"][-1])
    after_compaction = api.turn_requests()[1]
    assert after_compaction["messages"][0] == {"role": "user", "content": first["data"]["content"]}
    kept = after_compaction["messages"][1:]  # the last tool exchange stays verbatim
    assert [m["role"] for m in kept] == ["assistant", "user"]
    assert kept[0]["content"][0]["id"] == kept[1]["content"][0]["tool_use_id"] == "toolu_00_0"
    assert api.summary in first["data"]["content"] and TASK in first["data"]["content"]

    (seen,) = tool_results_in(api.turn_requests()[3])
    assert TASK in result_text(seen)  # the model reached pre-compaction history through session_events
    async with gateway.client(session=session) as mcp:
        early = await mcp.call_tool("session_events", {"before": first["seq"], "types": ["user.message"]})
    assert TASK in text_of(early)
