"""``GET /metrics``: a few counters in the Prometheus text format (admin key required).

Counted where the pipeline logs a result, so every call is counted exactly once, refused and
failed ones included. No label carries a value from a call's arguments or output.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gateway.errors import Forbidden


@dataclass
class Metrics:
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (tool, outcome) -> count
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # tool -> summed duration

    def observe(self, tool: str, outcome: str, duration_s: float) -> None:
        self.calls[(tool, outcome)] += 1
        self.seconds[tool] += duration_s

    def render(self) -> str:
        lines = [
            "# HELP keyhand_tool_calls_total Tool calls by tool and outcome (result, error).",
            "# TYPE keyhand_tool_calls_total counter",
            *(f'keyhand_tool_calls_total{{tool="{t}",outcome="{o}"}} {n}' for (t, o), n in sorted(self.calls.items())),
            "# HELP keyhand_tool_call_seconds_total Time spent in tool calls, by tool.",
            "# TYPE keyhand_tool_call_seconds_total counter",
            *(f'keyhand_tool_call_seconds_total{{tool="{t}"}} {s:.6f}' for t, s in sorted(self.seconds.items())),
        ]
        return "\n".join(lines) + "\n"


METRICS = Metrics()


async def metrics_endpoint(request: Request) -> Response:
    principal = request.scope.get("keyhand.principal")
    if principal is None or not getattr(principal, "admin", False):
        raise Forbidden("/metrics needs an admin key")
    return PlainTextResponse(METRICS.render(), media_type="text/plain; version=0.0.4")
