"""Permission policy: which tools a profile may call, and whether to ask the person first.

A profile maps tool-name globs to ``allow``, ``ask`` or ``deny``. The most specific
matching pattern wins: an exact name beats any glob, and among globs the one
with more literal characters wins (``tracker__delete_*`` beats ``tracker__*``,
which beats ``*``). A tool no pattern matches gets its source's default: built-in
tools ``allow``, upstream and HTTP tools ``ask`` (so a new upstream tool cannot run
unseen, as in hosted runtimes). Tools that resolve to ``deny`` are not listed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from gateway.config import Decision


def _specificity(pattern: str) -> tuple[int, int]:
    literal = sum(1 for ch in pattern if ch not in "*?[]")
    return (0 if any(ch in pattern for ch in "*?[") else 1, literal)


def decide(rules: Mapping[str, Decision], tool_name: str, default: Decision) -> Decision:
    matches = [p for p in rules if fnmatch.fnmatchcase(tool_name, p)]
    if not matches:
        return default
    return rules[max(matches, key=_specificity)]
