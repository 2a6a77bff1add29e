"""The reference agent loop: stateless, everything durable in the session's ledger.

``keyhand agent run --model M "task"`` and ``keyhand agent resume SESSION`` both
come down to :func:`drive`, which repeats: settle the last message's tool uses,
compact if the conversation nears the budget, ask the model, record its answer.
Every step is appended to the ledger before the next one starts and folded into
the :class:`~gateway.harness_history.Conversation` from the stored event, so a
harness killed at any point is replaced by ``resume``, which rebuilds the same
conversation from the ledger and goes on. A tool call that already reached the
gateway is never sent again (see ``harness_history`` for how a ``tool_use`` is
linked to the gateway's ``tool.call``).

The model is reached with the ``anthropic`` SDK: ``ANTHROPIC_API_KEY`` (or
``ANTHROPIC_AUTH_TOKEN``) and ``ANTHROPIC_BASE_URL`` come from the environment.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, cast

import anthropic
import anyio
from anthropic.types import ToolParam

from gateway.client import DEFAULT_URL, Block, KeyhandClient, as_block, tool_result
from gateway.errors import KeyhandError
from gateway.harness_history import Conversation, Outcome, with_user_text

log = logging.getLogger("keyhand.harness")

DEFAULT_SYSTEM = (
    "You are an agent working through keyhand's tools in a sandbox. Work step by step with the tools, "
    "and finish with a short answer. Your whole history, including anything summarised away, stays readable "
    "with the session_events tool."
)
COMPACT_PROMPT = (
    "The conversation is getting long. Summarise it for yourself: the task, what has been done, what was "
    "learned (file names, results, decisions), and what remains. Answer with the summary only."
)
INTERRUPTED = (
    "The harness stopped while this call was in flight and no result arrived, so whether it ran is unknown "
    "(it was not retried). "
    "Check its effects, or read the ledger around seq {seq} with session_events, before running it again."
)


class HarnessError(KeyhandError):
    """The loop cannot go on (model API failure, missing key); the session stays resumable."""


@dataclass
class Settings:
    """One invocation's options (``keyhand agent run/resume`` flags)."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    model: str | None = None
    max_turns: int = 50
    context_budget: int = 100_000
    max_tokens: int = 4096
    system: str = DEFAULT_SYSTEM
    in_flight_wait_s: float = 60.0  # how long resume waits for a call the dead harness left running


class Harness:
    """One session being driven: the keyhand client, the model client and the conversation."""

    def __init__(self, keyhand: KeyhandClient, model: anthropic.AsyncAnthropic, settings: Settings) -> None:
        self.kh = keyhand
        self.model = model
        self.settings = settings
        self.conv = Conversation()
        self.tools: list[ToolParam] = []

    async def record(self, type: str, data: dict[str, Any]) -> Block:
        """Append an event to the ledger, then fold the stored event into the conversation."""
        event = await self.kh.append(type, data)
        self.conv.apply(event)
        return event

    async def rebuild(self) -> None:
        for event in await self.kh.all_events():
            self.conv.apply(event)

    async def drive(self) -> str:
        """Run until the model ends its turn or ``max_turns`` model turns were taken; the reason."""
        self.tools = await self.kh.tools()
        turns = 0
        while True:
            await self.settle_tool_uses()
            if self.conv.finished:
                return "end_turn"
            if turns >= self.settings.max_turns:
                await self.record("harness.finished", {"reason": "max_turns", "turns": turns})
                return "max_turns"
            if len(self.conv.messages) > 1 and self.conv.estimated_tokens() >= self.settings.context_budget:
                await self.compact()
            await self.take_turn()
            turns += 1

    async def take_turn(self) -> None:
        response = await self.ask(self.conv.messages)
        content = [as_block(b) for b in response.content]
        data = {
            "content": content,
            "model": response.model,
            "stop_reason": response.stop_reason,
            "usage": response.usage.model_dump(mode="json", exclude_none=True),
        }
        await self.record("agent.message", data)
        names = [b["name"] for b in content if b.get("type") == "tool_use"]
        log.info("turn: %s", ", ".join(names) if names else f"done ({response.stop_reason})")
        if not names:
            await self.record("harness.finished", {"reason": str(response.stop_reason)})

    async def settle_tool_uses(self) -> None:
        """Give every pending ``tool_use`` a result: run it, or take the one the gateway already logged."""
        for use in self.conv.unanswered():
            outcome = self.conv.outcome(use)
            if outcome.action == "unknown":
                outcome = await self.await_outcome(use, outcome)
            if outcome.action == "run":
                await self.record("harness.tool_started", {"tool_use_id": use["id"], "name": use["name"]})
                block = await self.kh.run_tool_use(use)
                data = {"tool_use_id": use["id"], "content": block["content"], "is_error": bool(block.get("is_error"))}
            elif outcome.action == "logged":
                log.info("tool %s already ran (seq %s); using its logged result", use["name"], outcome.call_seq)
                data = {"tool_use_id": use["id"], "content": outcome.content, "is_error": outcome.is_error}
                data["call_seq"] = outcome.call_seq
            else:
                text = INTERRUPTED.format(seq=outcome.call_seq)
                block = tool_result(use["id"], [{"type": "text", "text": text}], is_error=True)
                data = {"tool_use_id": use["id"], "content": block["content"], "is_error": True}
                data["call_seq"] = outcome.call_seq
            await self.record("agent.tool_result", data)

    async def await_outcome(self, use: Block, outcome: Outcome) -> Outcome:
        """A call the dead harness left in flight may still be running in the gateway: wait for its result."""
        assert outcome.call_seq is not None
        log.info("tool %s (seq %d) is still in flight; waiting for its result", use["name"], outcome.call_seq)
        wait = self.settings.in_flight_wait_s
        event = await self.kh.wait_for_event(("tool.result", "tool.error"), after=outcome.call_seq, timeout=wait)
        while event is not None and event["data"].get("call_seq") != outcome.call_seq:
            event = await self.kh.wait_for_event(("tool.result", "tool.error"), after=event["seq"], timeout=wait)
        if event is not None:
            self.conv.apply(event)
        return self.conv.outcome(use)

    async def compact(self) -> None:
        """Replace the conversation with the model's own summary and its last tool exchange.

        The last exchange stays verbatim so the model sees the result it is about
        to act on; everything else is in the summary, and in the ledger.
        """
        before = self.conv.estimated_tokens()
        response = await self.ask(with_user_text(self.conv.messages, COMPACT_PROMPT), tool_choice={"type": "none"})
        summary = "\n".join(b.text for b in response.content if isinstance(b, anthropic.types.TextBlock))
        through = self.conv.last_seq
        content = (
            f"Task: {self.conv.task}\n\nThe conversation so far was compacted into this summary (events up to "
            f"seq {through} of session {self.kh.session_id} stay readable with the session_events tool):\n\n"
            f"{summary}\n\nContinue the task."
        )
        data = {
            "summary": summary,
            "content": content,
            "kept_messages": self.conv.keepable(),
            "through_seq": through,
            "estimated_tokens": before,
        }
        await self.record("agent.compaction", data)
        log.info("compacted %d estimated tokens (budget %d)", before, self.settings.context_budget)

    async def ask(
        self, messages: list[Block], tool_choice: anthropic.types.ToolChoiceParam | anthropic.Omit = anthropic.omit
    ) -> anthropic.types.Message:
        """One Messages API call with the session's tools; a failure ends this run, not the session."""
        try:
            return await self.model.messages.create(
                model=self.conv.model,
                max_tokens=self.conv.max_tokens,
                system=self.conv.system,
                tools=self.tools,
                messages=cast(Any, messages),
                tool_choice=tool_choice,
            )
        except anthropic.APIError as exc:
            raise HarnessError(
                f"the model API failed ({type(exc).__name__}: {exc}); the session is saved, "
                f"continue with: keyhand agent resume {self.kh.session_id}"
            ) from None


def model_client() -> anthropic.AsyncAnthropic:
    """The Anthropic client, configured from the environment as the SDK does it."""
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise HarnessError("set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for another Messages API server)")
    return anthropic.AsyncAnthropic()


async def run(settings: Settings, task: str) -> tuple[str, Harness]:
    """Start a new session on ``task`` and drive it; ``(reason, harness)``."""
    if not settings.model:
        raise HarnessError("--model is required to start a task")
    model = model_client()  # before any session exists, so a missing key leaves nothing behind
    async with KeyhandClient(settings.url, settings.api_key) as kh:
        harness = Harness(kh, model, settings)
        announce(kh.session_id)
        started = {"model": settings.model, "task": task, "system": settings.system, "max_tokens": settings.max_tokens}
        await harness.record("harness.started", started)
        await harness.record("user.message", {"content": task})
        return await interruptible(harness), harness


async def resume(settings: Settings, session_id: str, message: str | None = None) -> tuple[str, Harness]:
    """Rebuild ``session_id``'s conversation from the ledger and drive it on (with a new message, if given)."""
    model = model_client()
    async with KeyhandClient(settings.url, settings.api_key, session_id) as kh:
        harness = Harness(kh, model, settings)
        await harness.rebuild()
        if not harness.conv.model:
            raise HarnessError(f"session {session_id} was not started by `keyhand agent run`; nothing to resume")
        if settings.model:
            harness.conv.model = settings.model
        announce(kh.session_id)
        await harness.record("harness.resumed", {"after_seq": harness.conv.last_seq, "model": harness.conv.model})
        if message:
            await harness.record("user.message", {"content": message})
        elif harness.conv.finished and not harness.conv.unanswered():
            return "already_finished", harness
        return await interruptible(harness), harness


async def interruptible(harness: Harness) -> str:
    """Drive, and on Ctrl-C leave a ``harness.interrupted`` mark before going away."""
    try:
        return await harness.drive()
    except anyio.get_cancelled_exc_class():
        with anyio.move_on_after(5, shield=True):
            await harness.kh.append("harness.interrupted", {"after_seq": harness.conv.last_seq})
        raise


def announce(session_id: str) -> None:
    print(f"keyhand agent: session {session_id}", file=sys.stderr, flush=True)
