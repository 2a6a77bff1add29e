"""``keyhand agent run | resume``: the reference harness's command line (see gateway/harness.py).

    keyhand agent run --model MODEL "task"     start a session and work on the task
    keyhand agent resume SESSION ["message"]   rebuild the conversation from the ledger and go on

The session id is printed on stderr as soon as it exists; the model's final
answer goes to stdout. Ctrl-C stops cleanly (exit 130) and ``resume`` continues
later. Exit status: 0 when the model ended its turn, 3 when ``--max-turns`` ran
out, 2 for a usage or gateway error, 1 when the model API failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from gateway.client import DEFAULT_URL, KeyhandClientError
from gateway.config import Config
from gateway.harness import Harness, HarnessError, Settings, resume, run

EXIT = {"end_turn": 0, "already_finished": 0, "max_turns": 3}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"keyhand MCP endpoint (default {DEFAULT_URL})")
    parser.add_argument("--api-key", help="keyhand API key (default: $KEYHAND_API_KEY)")
    parser.add_argument("--max-turns", type=int, default=50, help="model turns in this invocation (default 50)")
    parser.add_argument(
        "--context-budget",
        type=int,
        default=100_000,
        help="compact the conversation when it reaches this many estimated tokens (default 100000)",
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="run the reference agent loop against this gateway")
    actions = agent.add_subparsers(dest="action", required=True)
    start = actions.add_parser("run", help="start a task in a new session")
    start.add_argument("task", help="what the agent should do")
    start.add_argument("--model", required=True, help="model name for the Messages API")
    start.add_argument("--max-tokens", type=int, default=4096, help="max_tokens of each model turn")
    _common(start)
    wake = actions.add_parser("resume", help="continue a session from its ledger")
    wake.add_argument("session", help="the session id `agent run` printed")
    wake.add_argument("message", nargs="?", help="an optional new user message")
    wake.add_argument("--model", help="switch to this model (default: the one the session started with)")
    _common(wake)


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # one line per request is noise here
        for name in ("httpx2", "httpx", "mcp"):
            logging.getLogger(name).setLevel(logging.WARNING)
    settings = Settings(
        url=args.url,
        api_key=args.api_key or os.environ.get("KEYHAND_API_KEY") or None,
        model=args.model,
        max_turns=args.max_turns,
        context_budget=args.context_budget,
        max_tokens=getattr(args, "max_tokens", 4096),
    )
    if settings.max_turns < 1 or settings.context_budget < 1:
        print("keyhand: --max-turns and --context-budget must be positive", file=sys.stderr)
        return 2
    try:
        if args.action == "run":
            reason, harness = asyncio.run(run(settings, args.task))
        else:
            reason, harness = asyncio.run(resume(settings, args.session, args.message))
    except KeyboardInterrupt:
        print("keyhand agent: interrupted; continue with `keyhand agent resume SESSION`", file=sys.stderr)
        return 130
    except KeyhandClientError as exc:
        print(f"keyhand: {exc}", file=sys.stderr)
        return 2
    except HarnessError as exc:
        print(f"keyhand: {exc}", file=sys.stderr)
        return 1
    report(reason, harness)
    return EXIT.get(reason, 0)


def report(reason: str, harness: Harness) -> None:
    print(harness.conv.final_text())
    if reason == "max_turns":
        print(
            f"keyhand agent: stopped after --max-turns; continue with `keyhand agent resume {harness.kh.session_id}`",
            file=sys.stderr,
        )
