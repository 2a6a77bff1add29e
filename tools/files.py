"""File tools on the session workspace: ``read``, ``write``, ``edit``, ``glob``, ``grep``.

They run on the host, not in the sandbox, through :class:`tools.sandbox.workspace_fs.Workspace`,
which confines every path to ``ctx.workspace`` without following symlinks (code in the
sandbox can plant them, even while a tool runs). Paths may be given as the sandbox
sees them (``/workspace/src/x.py``) or relative to the workspace (``src/x.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tools.base import Annotations, CallContext, Tool, ToolError, ToolResult, ToolSpec
from tools.sandbox.workspace_fs import Workspace, display, workspace_parts

READ_MAX_BYTES = 10 << 20
READ_MAX_LINES = 2000
LINE_MAX_CHARS = 2000
OUTPUT_MAX_CHARS = 100_000
GLOB_MAX_RESULTS = 200
GREP_MAX_MATCHES = 200
GREP_MAX_FILE_BYTES = 5 << 20
WALK_MAX_ENTRIES = 50_000


def _path_prop(what: str) -> dict[str, str]:
    return {"type": "string", "description": f"{what}: /workspace/... or relative to the workspace."}


def _schema(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _arg(args: Mapping[str, Any], name: str, kind: type, default: Any = None) -> Any:
    """``args[name]`` checked against ``kind``; required when there is no default."""
    value = args.get(name, default)
    if value is None:
        raise ToolError(f"`{name}` is required")
    if not isinstance(value, kind):
        raise ToolError(f"`{name}` must be a {kind.__name__}")
    return value


def decode_text(data: bytes, path: str, size: int) -> str:
    """UTF-8 text, or a ToolError saying the file is binary (a NUL byte or invalid UTF-8)."""
    if b"\x00" in data[:8192]:
        raise ToolError(f"{path} is a binary file ({size} bytes); inspect it with bash (file, xxd, ...)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 4 and len(data) < size:
            return data[: exc.start].decode("utf-8")  # the read cap cut a multi-byte character
        raise ToolError(f"{path} is not UTF-8 text ({size} bytes); inspect it with bash (file, xxd, ...)") from None


class ReadTool:
    spec = ToolSpec(
        name="read",
        description=(
            "Read a text file of the workspace with numbered lines (like cat -n). view_range [start, end] selects "
            f"lines (1-based, end -1 = to the end); at most {READ_MAX_LINES} lines per call. Refuses binary files."
        ),
        input_schema=_schema(
            {
                "file_path": _path_prop("The file"),
                "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            },
            ["file_path"],
        ),
        annotations=Annotations(read_only=True, destructive=False, idempotent=True, title="Read file"),
    )

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        parts = workspace_parts(_arg(args, "file_path", str))
        start, end = _view_range(args.get("view_range"))
        data, size = Workspace(ctx.workspace).read_bytes(parts, READ_MAX_BYTES)
        lines = decode_text(data, display(parts), size).splitlines()
        last = len(lines) if end == -1 else min(end, len(lines))
        if start > max(len(lines), 1):
            raise ToolError(f"view_range starts at line {start} but {display(parts)} has {len(lines)} lines")
        shown, out, chars = lines[start - 1 : last][:READ_MAX_LINES], [], 0
        for n, line in enumerate(shown, start):
            text = line if len(line) <= LINE_MAX_CHARS else line[:LINE_MAX_CHARS] + " [line truncated]"
            chars += len(text) + 8
            if chars > OUTPUT_MAX_CHARS:
                break
            out.append(f"{n:6}\t{text}")
        end_shown = start + len(out) - 1
        if end_shown < len(lines) or len(data) < size:
            total = f"{len(lines)}" if len(data) == size else f"more than {len(lines)}"
            out.append(f"[showing lines {start}-{end_shown} of {total}; use view_range to read further]")
        return ToolResult.text("\n".join(out) if out else "[empty file]")


def _view_range(value: object) -> tuple[int, int]:
    if value is None:
        return 1, -1
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        raise ToolError("`view_range` must be [start, end] integers (end -1 means to the end)")
    start, end = value
    if start < 1 or (end != -1 and end < start):
        raise ToolError("`view_range` needs start >= 1 and end >= start (or -1)")
    return start, end


class WriteTool:
    spec = ToolSpec(
        name="write",
        description="Create or overwrite a file in the workspace with `content` (atomic; parent directories are made).",
        input_schema=_schema(
            {"file_path": _path_prop("The file"), "content": {"type": "string"}}, ["file_path", "content"]
        ),
        annotations=Annotations(read_only=False, destructive=True, idempotent=True, title="Write file"),
    )

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        parts = workspace_parts(_arg(args, "file_path", str))
        data = _arg(args, "content", str, "").encode("utf-8")
        Workspace(ctx.workspace).write_bytes(parts, data)
        return ToolResult.text(f"Wrote {len(data)} bytes to {display(parts)}")


class EditTool:
    spec = ToolSpec(
        name="edit",
        description=(
            "Replace `old_string` with `new_string` in a workspace file. old_string must occur exactly once "
            "(include surrounding lines to make it unique) unless replace_all is true."
        ),
        input_schema=_schema(
            {
                "file_path": _path_prop("The file"),
                "old_string": {"type": "string"},
                "new_string": {"type": "string"},
                "replace_all": {"type": "boolean", "default": False},
            },
            ["file_path", "old_string", "new_string"],
        ),
        annotations=Annotations(read_only=False, destructive=True, idempotent=False, title="Edit file"),
    )

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        parts = workspace_parts(_arg(args, "file_path", str))
        old, new = _arg(args, "old_string", str, ""), _arg(args, "new_string", str, "")
        replace_all = bool(_arg(args, "replace_all", bool, False))
        if not old:
            raise ToolError("`old_string` must not be empty (use write to create a file)")
        if old == new:
            raise ToolError("`old_string` and `new_string` are the same; nothing to do")
        ws = Workspace(ctx.workspace)
        data, size = ws.read_bytes(parts, READ_MAX_BYTES + 1)
        if size > READ_MAX_BYTES:
            raise ToolError(f"{display(parts)} is larger than {READ_MAX_BYTES} bytes; edit it with bash")
        text = decode_text(data, display(parts), size)
        count = text.count(old)
        if count == 0:
            raise ToolError(f"old_string does not occur in {display(parts)}")
        if count > 1 and not replace_all:
            raise ToolError(
                f"old_string occurs {count} times in {display(parts)}; add surrounding context to make it unique, "
                "or set replace_all: true"
            )
        ws.write_bytes(parts, text.replace(old, new).encode("utf-8"))
        return ToolResult.text(f"Replaced {count} occurrence{'s' if count > 1 else ''} in {display(parts)}")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob with ``**`` (any number of directories), ``*``, ``?`` and ``[...]`` to a regex."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (close := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : close].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class GlobTool:
    spec = ToolSpec(
        name="glob",
        description=(
            "Find workspace files whose path (relative to `path`) matches a glob such as **/*.py; "
            f"newest first, at most {GLOB_MAX_RESULTS}. Symbolic links are not followed."
        ),
        input_schema=_schema(
            {"pattern": {"type": "string"}, "path": _path_prop("Directory to search (default: the workspace)")},
            ["pattern"],
        ),
        annotations=Annotations(read_only=True, destructive=False, idempotent=True, title="Find files"),
    )

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        pattern = _arg(args, "pattern", str)
        base = workspace_parts(_arg(args, "path", str, "/workspace"))
        regex = glob_regex(pattern.removeprefix("./"))
        found = [
            e
            for e in Workspace(ctx.workspace).walk(base, max_entries=WALK_MAX_ENTRIES)
            if regex.match("/".join(e.parts[len(base) :]))
        ]
        found.sort(key=lambda e: e.stat.st_mtime_ns, reverse=True)
        lines = [display(e.parts) for e in found[:GLOB_MAX_RESULTS]]
        if len(found) > GLOB_MAX_RESULTS:
            lines.append(f"[{len(found) - GLOB_MAX_RESULTS} more; narrow the pattern or the path]")
        return ToolResult.text("\n".join(lines) if lines else f"No files match {pattern!r} under {display(base)}")


class GrepTool:
    spec = ToolSpec(
        name="grep",
        description=(
            "Search workspace text files for a regular expression (Python re syntax); prints path:line:text, "
            f"at most {GREP_MAX_MATCHES} matches. Binary files and symbolic links are skipped."
        ),
        input_schema=_schema(
            {"pattern": {"type": "string"}, "path": _path_prop("File or directory to search (default: the workspace)")},
            ["pattern"],
        ),
        annotations=Annotations(read_only=True, destructive=False, idempotent=True, title="Search files"),
    )

    async def call(self, ctx: CallContext, args: Mapping[str, Any]) -> ToolResult:
        pattern = _arg(args, "pattern", str)
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from None
        base = workspace_parts(_arg(args, "path", str, "/workspace"))
        ws = Workspace(ctx.workspace)
        matches: list[str] = []
        for entry in ws.walk(base, max_entries=WALK_MAX_ENTRIES):
            if entry.stat.st_size > GREP_MAX_FILE_BYTES:
                continue
            matches += _grep_file(ws, entry.parts, regex, GREP_MAX_MATCHES + 1 - len(matches))
            if len(matches) > GREP_MAX_MATCHES:
                matches[GREP_MAX_MATCHES:] = [f"[more than {GREP_MAX_MATCHES} matches; narrow the pattern or path]"]
                break
        return ToolResult.text("\n".join(matches) if matches else f"No matches for {pattern!r} under {display(base)}")


def _grep_file(ws: Workspace, parts: list[str], regex: re.Pattern[str], limit: int) -> list[str]:
    try:
        data, size = ws.read_bytes(parts, GREP_MAX_FILE_BYTES)
        text = decode_text(data, display(parts), size)
    except ToolError:
        return []  # binary, or replaced by a link since the walk: skip
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if regex.search(line):
            out.append(f"{display(parts)}:{n}:{line[:500]}")
            if len(out) >= limit:
                break
    return out


def file_tools() -> list[Tool]:
    """read, write, edit, glob, grep — each works on ``ctx.workspace``."""
    return [ReadTool(), WriteTool(), EditTool(), GlobTool(), GrepTool()]
