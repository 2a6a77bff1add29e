"""The conversation a harness rebuilds from ledger events: messages, pending tool uses, what already ran."""

from __future__ import annotations

import itertools
from typing import Any

from gateway.harness_history import Conversation

Event = dict[str, Any]


class Ledger:
    """A factory for event sequences as the ledger API returns them."""

    def __init__(self) -> None:
        self.seq = itertools.count(1)
        self.events: list[Event] = []

    def add(self, type_: str, **data: Any) -> Event:
        event = {"seq": next(self.seq), "type": type_, "data": data}
        self.events.append(event)
        return event

    def conversation(self) -> Conversation:
        conv = Conversation()
        for event in self.events:
            conv.apply(event)
        return conv


def use(id_: str, name: str = "bash", **input_: Any) -> Event:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


def started(log: Ledger, *tool_uses: Event, usage: dict[str, int] | None = None) -> None:
    log.add("harness.started", model="m", task="t", system="s", max_tokens=100)
    log.add("user.message", content="t")
    log.add("agent.message", content=[*tool_uses], usage=usage or {})


def test_tool_results_become_one_user_turn_in_tool_use_order_once_all_have_arrived() -> None:
    log = Ledger()
    started(log, use("a"), use("b"))
    log.add("agent.tool_result", tool_use_id="b", content=[{"type": "text", "text": "B"}], is_error=True)
    assert [u["id"] for u in log.conversation().unanswered()] == ["a"]
    log.add("agent.tool_result", tool_use_id="a", content=[{"type": "text", "text": "A"}], is_error=False)
    conv = log.conversation()
    assert conv.unanswered() == []
    assert [(b["tool_use_id"], b.get("is_error", False)) for b in conv.messages[-1]["content"]] == [
        ("a", False),
        ("b", True),
    ]


def test_a_tool_use_without_a_marker_or_without_a_gateway_call_must_still_run() -> None:
    log = Ledger()
    started(log, use("a"), use("b"))
    log.add("harness.tool_started", tool_use_id="b", name="bash")
    conv = log.conversation()
    assert conv.outcome(conv.pending[0]).action == "run"
    assert conv.outcome(conv.pending[1]).action == "run"


def test_a_call_the_gateway_logged_with_its_result_is_answered_from_the_ledger() -> None:
    log = Ledger()
    started(log, use("a"))
    log.add("harness.tool_started", tool_use_id="a", name="bash")
    call = log.add("tool.call", tool="bash", arguments={})
    log.add("tool.error", tool="bash", call_seq=call["seq"], content=[{"type": "text", "text": "exit 1"}])
    conv = log.conversation()
    outcome = conv.outcome(conv.pending[0])
    assert (outcome.action, outcome.call_seq, outcome.is_error) == ("logged", call["seq"], True)
    assert outcome.content == [{"type": "text", "text": "exit 1"}]


def test_a_call_the_gateway_logged_without_a_result_is_unknown_and_not_run_again() -> None:
    log = Ledger()
    started(log, use("a", name="read"))
    log.add("harness.tool_started", tool_use_id="a", name="read")
    log.add("tool.call", tool="session_events", arguments={})  # someone else's call, another tool
    call = log.add("tool.call", tool="read", arguments={})
    conv = log.conversation()
    outcome = conv.outcome(conv.pending[0])
    assert (outcome.action, outcome.call_seq) == ("unknown", call["seq"])


def test_a_compaction_restarts_from_its_content_and_keeps_the_last_exchange() -> None:
    log = Ledger()
    started(log, use("a"))
    log.add("agent.tool_result", tool_use_id="a", content=[{"type": "text", "text": "A"}], is_error=False)
    before = log.conversation()
    assert before.keepable() == 2
    log.add("agent.compaction", summary="S", content="Task t. Summary S.", kept_messages=2)
    conv = log.conversation()
    assert conv.messages == [{"role": "user", "content": "Task t. Summary S."}, *before.messages[-2:]]
    assert conv.compactions == 1


def test_the_token_estimate_is_the_last_reported_usage_plus_what_came_after() -> None:
    log = Ledger()
    started(log, use("a"), usage={"input_tokens": 1000, "output_tokens": 50, "cache_read_input_tokens": 7})
    assert log.conversation().estimated_tokens() == 1057 + len("[]") // 4
    log.add("agent.tool_result", tool_use_id="a", content=[{"type": "text", "text": "x" * 400}], is_error=False)
    assert log.conversation().estimated_tokens() > 1057 + 100


def test_a_follow_up_user_message_after_tool_results_joins_the_same_user_turn() -> None:
    log = Ledger()
    started(log, use("a"))
    log.add("agent.tool_result", tool_use_id="a", content=[{"type": "text", "text": "A"}], is_error=False)
    log.add("harness.finished", reason="end_turn")
    log.add("user.message", content="and then?")
    conv = log.conversation()
    assert not conv.finished
    assert [b["type"] for b in conv.messages[-1]["content"]] == ["tool_result", "text"]


def test_running_out_of_turns_is_not_finishing_the_task() -> None:
    log = Ledger()
    started(log, use("a"))
    log.add("agent.tool_result", tool_use_id="a", content=[{"type": "text", "text": "A"}], is_error=False)
    log.add("harness.finished", reason="max_turns")
    assert not log.conversation().finished
    log.add("agent.message", content=[{"type": "text", "text": "done"}], usage={})
    log.add("harness.finished", reason="end_turn")
    assert log.conversation().finished
    assert log.conversation().final_text() == "done"
