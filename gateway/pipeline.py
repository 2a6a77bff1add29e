"""One tool call, end to end: the steps in their fixed order, failing closed.

    log call -> arguments -> policy -> credential -> invoke -> redact -> log result

``run_call`` is the only place that order is written down. Each step is a small
function; a step that refuses raises :class:`Refused` (the call becomes a tool
error, still logged and still redacted). ``tool.call`` is appended first so that
refused and failed attempts are in the ledger too; ``tool.result`` /
``tool.error`` carries the duration and the (truncated, redacted) output.
Redaction runs on every result, errors included, and on everything logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import jsonschema

from gateway.auth import Principal
from gateway.config import Decision
from gateway.context import ToolContext
from gateway.credentials import CredentialRefused, Credentials
from gateway.ledger import Ledger
from gateway.metrics import METRICS
from gateway.redact import Redactor
from tools.base import Tool, ToolError, ToolResult

log = logging.getLogger("keyhand.pipeline")


class Refused(Exception):
    """A pipeline step declined the call; the message is what the model is told."""


class Asker(Protocol):
    """Asks the person behind the client to approve a call (MCP elicitation)."""

    async def ask(self, message: str) -> bool | None:
        """True / False for the person's answer; None when this client cannot be asked."""
        ...


@dataclass
class Call:
    """Everything one ``tools/call`` needs, built by the MCP surface."""

    session_id: str
    principal: Principal
    tool: Tool
    args: Mapping[str, Any]
    decision: Decision
    ctx: ToolContext
    redactor: Redactor
    asker: Asker
    ledger: Ledger
    credentials: Credentials | None = None
    max_event_bytes: int = 16_384
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.tool.spec.name


async def run_call(call: Call) -> ToolResult:
    started = time.monotonic()
    call_seq = await log_call(call)
    try:
        try:
            check_arguments(call)
            await check_policy(call)
            await use_credential(call)
            result = await invoke(call)
        except (Refused, ToolError) as exc:
            result = ToolResult.error(str(exc))
        result = redact(call, result)
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await log_result(call, call_seq, _interrupted(exc), started)
        raise
    await log_result(call, call_seq, result, started)
    return result


async def log_call(call: Call) -> int:
    data = call.redactor.value({**call.meta, "tool": call.name, "arguments": dict(call.args)})
    event = await call.ledger.append(call.session_id, "tool.call", data)
    return event.seq


_validators: dict[int, tuple[Any, Any]] = {}


def validator_for(schema: dict[str, Any]) -> Any:
    """A compiled validator per schema object (compiling one costs more than the whole call)."""
    cached = _validators.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        validator = cls(schema)
    except jsonschema.SchemaError:
        validator = None
    _validators[id(schema)] = (schema, validator)
    return validator


def check_arguments(call: Call) -> None:
    validator = validator_for(call.tool.spec.input_schema)
    if validator is None:
        log.warning("tool %s has an invalid input schema; arguments not validated", call.name)
        return
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(call.args)))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "arguments"
        raise Refused(f"invalid arguments for {call.name}: {where}: {error.message}")


async def check_policy(call: Call) -> None:
    if call.decision == "allow":
        return
    if call.decision == "deny":
        await call.ledger.append(call.session_id, "policy.denied", {"tool": call.name, "reason": "profile"})
        raise Refused(f"the tool {call.name} is denied by this agent profile")
    message = f"Allow the agent to call {call.name}?"
    await call.ledger.append(call.session_id, "policy.asked", {"tool": call.name})
    answer = await call.asker.ask(message)
    await call.ledger.append(call.session_id, "policy.answered", {"tool": call.name, "approved": answer})
    if answer is None:
        raise Refused(
            f"{call.name} needs approval, and this client cannot be asked (no MCP elicitation). "
            f'To allow it, set `agents.<profile>.tools: {{"{call.name}": allow}}` in the config.'
        )
    if not answer:
        raise Refused(f"the person declined the call to {call.name}")


async def use_credential(call: Call) -> None:
    """Fetch the bound credential's grant for upstream and HTTP tools (built-in tools have no binding)."""
    binding = getattr(call.tool, "binding", None)
    if binding is None or binding.credential is None:
        return
    if call.credentials is None:
        raise Refused(f"{call.name} needs the credential {binding.credential!r}, but the vault is not open")
    try:
        call.ctx.credential = await call.credentials.grant(
            binding.credential, binding.inject, call.principal, call.session_id, optional=binding.allow_unauthenticated
        )
    except CredentialRefused as exc:
        raise Refused(str(exc)) from None


async def invoke(call: Call) -> ToolResult:
    try:
        return await call.tool.call(call.ctx, call.args)
    except (ToolError, Refused):
        raise
    except Exception:  # the one top-level boundary of a tool: details go to the log, not the model
        log.exception("tool %s failed", call.name)
        return ToolResult.error(f"{call.name} failed with an internal error (see the gateway log)")


def redact(call: Call, result: ToolResult) -> ToolResult:
    if not call.redactor:
        return result
    structured = call.redactor.value(result.structured) if result.structured is not None else None
    return ToolResult(content=call.redactor.value(result.content), is_error=result.is_error, structured=structured)


async def log_result(call: Call, call_seq: int, result: ToolResult, started: float) -> None:
    duration_s = time.monotonic() - started
    duration_ms = round(duration_s * 1000, 3)
    METRICS.observe(call.name, "error" if result.is_error else "result", duration_s)
    data: dict[str, Any] = {
        "tool": call.name,
        "call_seq": call_seq,
        "duration_ms": duration_ms,
        "content": _truncate(result.content, call.max_event_bytes),  # already redacted by the redact step
    }
    if result.structured is not None:
        data["structured"] = result.structured
    await call.ledger.append(call.session_id, "tool.error" if result.is_error else "tool.result", data)


def _interrupted(exc: BaseException) -> ToolResult:
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return ToolResult.error("the call was cancelled")
    return ToolResult.error(f"the call was interrupted ({type(exc).__name__})")


def _truncate(content: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in content:
        if block.get("type") == "text":
            text = str(block.get("text", ""))
            if len(text) > budget:
                note = f"\n[... truncated in the ledger: {len(text)} characters in all]"
                block = {**block, "text": text[:budget] + note}
            budget = max(0, budget - len(text))
        elif block.get("type") in ("image", "audio"):
            block = {"type": block["type"], "mimeType": block.get("mimeType"), "omitted": "binary data"}
        out.append(block)
    return out
