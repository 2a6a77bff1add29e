"""The reference harness's conversation, rebuilt from the ledger one event at a time.

The harness keeps nothing that matters in memory: each event it appends to the
session's ledger is also applied to a :class:`Conversation` with
:meth:`Conversation.apply`, and ``keyhand agent resume`` applies the same events
read back from the ledger. One function computes both, so a resumed harness
sends the model exactly the messages the dead one would have sent.

The events the harness writes (all in harness-appendable domains):

    harness.started       {model, task, system, max_tokens}           once, first
    user.message          {content}                                    a user turn
    agent.message         {content, model, stop_reason, usage}         the full assistant content blocks
    harness.tool_started  {tool_use_id, name}                          right before the MCP tools/call
    agent.tool_result     {tool_use_id, content, is_error[, call_seq]} right after it, the block the model gets
    agent.compaction      {summary, content, kept_messages, ...}       restart from ``content`` + the last exchange
    harness.finished      {reason}                                     end_turn or max_turns
    harness.resumed / harness.interrupted                              bookkeeping, ignored here

How a ``tool_use`` is linked to what the gateway logged: ``harness.tool_started``
is appended just before the call, and the gateway appends ``tool.call`` first
thing when the call arrives, so the first ``tool.call`` of that tool after the
marker is this ``tool_use``'s, and the ``tool.result`` / ``tool.error`` whose
``call_seq`` names it is its outcome. If a harness died after the tool ran but
before ``agent.tool_result``, :meth:`Conversation.outcome` finds the result in
the gateway's own events and the call is not run again. If the gateway logged
``tool.call`` but no result yet (the call was in flight when the harness died; the
gateway finishes it), ``resume`` waits a bounded time for the result, and otherwise
tells the model the outcome is unknown; it never sends the call again. (This
assumes one harness drives a session at a time, which ``resume`` is for.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Block = dict[str, Any]
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do about a ``tool_use`` that has no ``agent.tool_result`` yet."""

    action: Literal["run", "logged", "unknown"]
    call_seq: int | None = None
    content: list[Block] = field(default_factory=list)
    is_error: bool = False


@dataclass
class Conversation:
    """The state of one session's conversation, as the ledger says it is."""

    task: str = ""
    model: str = ""
    system: str = ""
    max_tokens: int = 4096
    messages: list[Block] = field(default_factory=list)
    pending: list[Block] = field(default_factory=list)  # tool_use blocks of the last assistant message
    answered: dict[str, Block] = field(default_factory=dict)  # tool_use_id -> tool_result block
    started: dict[str, int] = field(default_factory=dict)  # tool_use_id -> seq of harness.tool_started
    calls: list[tuple[int, str]] = field(default_factory=list)  # (seq, tool) of tool.call since the marker
    outcomes: dict[int, Block] = field(default_factory=dict)  # call_seq -> tool.result / tool.error event
    finished: bool = False
    compactions: int = 0
    last_seq: int = 0
    usage_tokens: int = 0  # context size the API reported for the last model turn
    usage_mark: int = 0  # len(messages) when usage_tokens was reported

    def apply(self, event: Block) -> None:
        """Fold one ledger event into the conversation (unknown types are ignored)."""
        self.last_seq = max(self.last_seq, int(event["seq"]))
        handler = _HANDLERS.get(event["type"])
        if handler is not None:
            handler(self, event)

    # -- event handlers ---------------------------------------------------------

    def _started(self, event: Block) -> None:
        data = event["data"]
        self.task, self.model = str(data.get("task", "")), str(data.get("model", ""))
        self.system, self.max_tokens = str(data.get("system", "")), int(data.get("max_tokens", 4096))

    def _user(self, event: Block) -> None:
        self.add_user(event["data"]["content"])
        self.finished = False

    def _agent(self, event: Block) -> None:
        data = event["data"]
        content = list(data["content"])
        self.messages.append({"role": "assistant", "content": content})
        self.pending = [b for b in content if b.get("type") == "tool_use"]
        self.answered, self.started, self.calls, self.outcomes = {}, {}, [], {}
        usage = data.get("usage") or {}
        self.usage_tokens = sum(int(usage.get(k) or 0) for k in _USAGE_KEYS)
        self.usage_mark = len(self.messages)

    def _tool_started(self, event: Block) -> None:
        self.started[str(event["data"]["tool_use_id"])] = int(event["seq"])

    def _tool_call(self, event: Block) -> None:
        if self.started:
            self.calls.append((int(event["seq"]), str(event["data"].get("tool", ""))))

    def _tool_outcome(self, event: Block) -> None:
        call_seq = event["data"].get("call_seq")
        if self.started and isinstance(call_seq, int):
            self.outcomes[call_seq] = event

    def _tool_result(self, event: Block) -> None:
        data = event["data"]
        block: Block = {"type": "tool_result", "tool_use_id": data["tool_use_id"], "content": data["content"]}
        if data.get("is_error"):
            block["is_error"] = True
        self.answered[str(data["tool_use_id"])] = block
        if self.pending and all(u["id"] in self.answered for u in self.pending):
            self.add_user([self.answered[u["id"]] for u in self.pending])
            self.pending, self.answered = [], {}

    def _compaction(self, event: Block) -> None:
        keep = int(event["data"].get("kept_messages", 0))
        kept = self.messages[len(self.messages) - keep :] if keep else []
        self.messages = [{"role": "user", "content": str(event["data"]["content"])}, *kept]
        self.pending, self.answered = [], {}
        self.usage_tokens, self.usage_mark = 0, 0
        self.compactions += 1

    def _finished(self, event: Block) -> None:
        self.finished = event["data"].get("reason") != "max_turns"  # out of turns is not done

    # -- questions the harness asks ---------------------------------------------

    def add_user(self, content: str | list[Block]) -> None:
        """Append a user turn, merged into the previous one if that is a user turn too."""
        if self.messages and self.messages[-1]["role"] == "user":
            last = self.messages[-1]
            last["content"] = _blocks(last["content"]) + _blocks(content)
        else:
            self.messages.append({"role": "user", "content": content})

    def unanswered(self) -> list[Block]:
        """The pending ``tool_use`` blocks that have no ``agent.tool_result`` yet, in order."""
        return [u for u in self.pending if u["id"] not in self.answered]

    def outcome(self, tool_use: Block) -> Outcome:
        """Whether this ``tool_use`` must still run, already ran (result in the ledger), or may have run."""
        marker = self.started.get(tool_use["id"])
        if marker is None:
            return Outcome("run")
        call_seq = next((seq for seq, name in self.calls if seq > marker and name == tool_use["name"]), None)
        if call_seq is None:  # the gateway logs tool.call before doing anything: it never arrived
            return Outcome("run")
        result = self.outcomes.get(call_seq)
        if result is None:
            return Outcome("unknown", call_seq)
        content = ledger_content(result["data"].get("content") or [])
        return Outcome("logged", call_seq, content, result["type"] == "tool.error")

    def keepable(self) -> int:
        """How many trailing messages a compaction can keep: the last tool exchange, when it is one."""
        tail = self.messages[-2:]
        if len(self.messages) >= 3 and [m["role"] for m in tail] == ["assistant", "user"]:
            return 2
        return 0

    def estimated_tokens(self) -> int:
        """The next request's size: the API's last ``usage`` plus ~4 characters a token for what came after."""
        later = self.messages[self.usage_mark :] if self.usage_tokens else self.messages
        text = json.dumps(later) + (self.system if not self.usage_tokens else "")
        return self.usage_tokens + len(text) // CHARS_PER_TOKEN

    def final_text(self) -> str:
        """The text of the last assistant message (what ``keyhand agent run`` prints)."""
        for message in reversed(self.messages):
            if message["role"] == "assistant":
                return "\n".join(b.get("text", "") for b in message["content"] if b.get("type") == "text")
        return ""


def _blocks(content: str | list[Block]) -> list[Block]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def with_user_text(messages: list[Block], text: str) -> list[Block]:
    """A copy of ``messages`` ending with ``text`` as (part of) a user turn; ``messages`` is not changed."""
    out = [dict(m) for m in messages]
    if out and out[-1]["role"] == "user":
        out[-1]["content"] = _blocks(out[-1]["content"]) + _blocks(text)
    else:
        out.append({"role": "user", "content": text})
    return out


def ledger_content(content: list[Block]) -> list[Block]:
    """MCP content as the gateway logged it (truncated, binaries omitted) as ``tool_result`` content."""
    blocks: list[Block] = []
    for item in content:
        if item.get("type") == "text":
            blocks.append({"type": "text", "text": str(item.get("text", ""))})
        else:
            blocks.append({"type": "text", "text": f"[{item.get('type', 'content')} omitted]"})
    return blocks or [{"type": "text", "text": "(no output)"}]


_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

_HANDLERS = {
    "harness.started": Conversation._started,
    "user.message": Conversation._user,
    "agent.message": Conversation._agent,
    "harness.tool_started": Conversation._tool_started,
    "tool.call": Conversation._tool_call,
    "tool.result": Conversation._tool_outcome,
    "tool.error": Conversation._tool_outcome,
    "agent.tool_result": Conversation._tool_result,
    "agent.compaction": Conversation._compaction,
    "harness.finished": Conversation._finished,
}
