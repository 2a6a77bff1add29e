"""``keyhand agent run | resume``: the reference harness's command line (see gateway/harness.py)."""

from __future__ import annotations

import argparse
import sys

from gateway.config import Config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="run the reference agent loop against this gateway")
    agent.add_subparsers(dest="action", required=True).add_parser("run", help="start a task")


def cmd_agent(args: argparse.Namespace, config: Config) -> int:
    print("keyhand: the agent harness is not built yet", file=sys.stderr)
    return 2
