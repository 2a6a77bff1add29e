"""``session_events``: the agent reads its own ledger in slices.

This is how an agent reaches history that no longer fits its context: by
sequence range (``after`` / ``before``), by type (``tool.*``), or the last N
(``last``). The output is capped; when more events match, the result ends with
the exact arguments for the next slice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tools.base import Annotations, CallContext, ToolError, ToolResult, ToolSpec

MAX_OUTPUT_CHARS = 20_000
MAX_LIMIT = 200

SPEC = ToolSpec(
    name="session_events",
    description=(
        "Read this session's event log (every tool call and result, messages, compactions) in slices. "
        "Use it to recover history that is no longer in your context. Give `after`/`before` sequence numbers, "
        "`types` such as ['tool.call'] or ['tool.*'], or `last` for the most recent N events."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "after": {
                "type": "integer",
                "minimum": 0,
                "description": "Only events with seq greater than this.",
            },
            "before": {
                "type": "integer",
                "minimum": 1,
                "description": "Only events with seq less than this.",
            },
            "types": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Event types or 'domain.*'.",
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
            "last": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "description": "The last N events.",
            },
        },
        "additionalProperties": False,
    },
    annotations=Annotations(read_only=True, destructive=False, idempotent=True, title="Read session events"),
)


class SessionEventsTool:
    spec = SPEC

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        types = list(args.get("types") or [])
        if "last" in args:
            if "after" in args:
                raise ToolError("give either `last` or `after`, not both")
            events = await ctx.read_events(
                before=args.get("before"), limit=int(args["last"]), types=types, order="desc"
            )
            events.reverse()
        else:
            events = await ctx.read_events(
                after=args.get("after"),
                before=args.get("before"),
                limit=int(args.get("limit", 50)),
                types=types,
            )
        return render(ctx.session_id, events, args, types)


def render(session_id: str, events: list[dict[str, Any]], args: Mapping[str, Any], types: list[str]) -> ToolResult:
    lines: list[str] = []
    used = 0
    shown: list[dict[str, Any]] = []
    for event in events:
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        if shown and used + len(line) > MAX_OUTPUT_CHARS:
            break
        lines.append(line)
        used += len(line)
        shown.append(event)
    header = f"session {session_id}: {len(shown)} event(s)"
    if shown:
        header += f", seq {shown[0]['seq']}..{shown[-1]['seq']}"
    text = "\n".join([header, *lines])
    requested = int(args.get("last") or args.get("limit") or 50)
    if shown and (len(shown) < len(events) or len(events) == requested):
        nxt: dict[str, Any] = {"after": shown[-1]["seq"]}
        if types:
            nxt["types"] = types
        text += f"\n[more events may follow: call session_events with {json.dumps(nxt)}]"
    structured = {"session_id": session_id, "events": shown}
    return ToolResult.text(text, structured=structured)


def session_events_tool() -> SessionEventsTool:
    return SessionEventsTool()
