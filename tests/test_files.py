"""The file tools stay inside the workspace, refuse links and binaries, and edit exactly what was asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox_helpers import RecordingContext, make_context
from tools.base import ToolError, ToolResult
from tools.files import EditTool, GlobTool, GrepTool, ReadTool, WriteTool, file_tools, glob_regex

pytestmark = pytest.mark.anyio


@pytest.fixture
def ctx(tmp_path: Path) -> RecordingContext:
    return make_context(tmp_path)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host file next to the workspaces that no file tool may read or change."""
    path = tmp_path / "outside.txt"
    path.write_text("host secret\n")
    return path


async def call(tool: Any, ctx: RecordingContext, **args: Any) -> ToolResult:
    result: ToolResult = await tool.call(ctx, args)
    return result


async def test_read_numbers_lines_and_honours_the_view_range(ctx: RecordingContext) -> None:
    (ctx.workspace / "a.txt").write_text("one\ntwo\nthree\nfour\n")
    whole = await call(ReadTool(), ctx, file_path="/workspace/a.txt")
    part = await call(ReadTool(), ctx, file_path="a.txt", view_range=[2, 3])
    assert whole.joined_text() == "     1\tone\n     2\ttwo\n     3\tthree\n     4\tfour"
    assert part.joined_text().startswith("     2\ttwo\n     3\tthree\n[showing lines 2-3")


async def test_read_refuses_a_binary_file_with_a_clear_message(ctx: RecordingContext) -> None:
    (ctx.workspace / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(ToolError, match="binary file"):
        await call(ReadTool(), ctx, file_path="blob.bin")


async def test_read_refuses_a_fifo_without_blocking(ctx: RecordingContext) -> None:
    os.mkfifo(ctx.workspace / "pipe")
    with pytest.raises(ToolError, match="not a regular file"):
        await call(ReadTool(), ctx, file_path="pipe")


async def test_write_creates_parents_and_replaces_atomically_keeping_the_mode(ctx: RecordingContext) -> None:
    await call(WriteTool(), ctx, file_path="/workspace/deep/dir/x.sh", content="echo 1\n")
    target = ctx.workspace / "deep/dir/x.sh"
    target.chmod(0o755)
    await call(WriteTool(), ctx, file_path="deep/dir/x.sh", content="echo 2\n")
    assert target.read_text() == "echo 2\n" and target.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.sh"]  # no temp file left behind


async def test_edit_replaces_a_unique_string(ctx: RecordingContext) -> None:
    (ctx.workspace / "m.py").write_text("x = 1\ny = 2\n")
    result = await call(EditTool(), ctx, file_path="m.py", old_string="y = 2", new_string="y = 3")
    assert (ctx.workspace / "m.py").read_text() == "x = 1\ny = 3\n" and "1 occurrence" in result.joined_text()


async def test_edit_says_how_many_times_an_ambiguous_string_occurs(ctx: RecordingContext) -> None:
    (ctx.workspace / "m.py").write_text("a\na\na\n")
    with pytest.raises(ToolError, match="occurs 3 times"):
        await call(EditTool(), ctx, file_path="m.py", old_string="a", new_string="b")
    await call(EditTool(), ctx, file_path="m.py", old_string="a", new_string="b", replace_all=True)
    assert (ctx.workspace / "m.py").read_text() == "b\nb\nb\n"


async def test_edit_of_a_missing_string_is_an_error(ctx: RecordingContext) -> None:
    (ctx.workspace / "m.py").write_text("a\n")
    with pytest.raises(ToolError, match="does not occur"):
        await call(EditTool(), ctx, file_path="m.py", old_string="zzz", new_string="b")


async def test_glob_matches_double_star_newest_first(ctx: RecordingContext) -> None:
    for i, rel in enumerate(["a.py", "pkg/b.py", "pkg/sub/c.py", "pkg/readme.md"]):
        path = ctx.workspace / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    result = await call(GlobTool(), ctx, pattern="**/*.py")
    scoped = await call(GlobTool(), ctx, pattern="*.py", path="/workspace/pkg")
    assert result.joined_text().split() == ["/workspace/pkg/sub/c.py", "/workspace/pkg/b.py", "/workspace/a.py"]
    assert scoped.joined_text() == "/workspace/pkg/b.py"


def test_glob_patterns_translate_like_shells_do() -> None:
    assert glob_regex("**/*.py").match("a/b/c.py") and glob_regex("**/*.py").match("c.py")
    assert not glob_regex("*.py").match("a/c.py")
    assert glob_regex("src/[!t]*.rs").match("src/main.rs") and not glob_regex("src/[!t]*.rs").match("src/test.rs")


async def test_grep_prints_path_line_and_text_and_skips_binaries(ctx: RecordingContext) -> None:
    (ctx.workspace / "a.txt").write_text("alpha\nbeta\ngamma beta\n")
    (ctx.workspace / "b.bin").write_bytes(b"beta\x00")
    result = await call(GrepTool(), ctx, pattern=r"be+ta")
    assert result.joined_text().split("\n") == ["/workspace/a.txt:2:beta", "/workspace/a.txt:3:gamma beta"]


async def test_grep_rejects_an_invalid_regex(ctx: RecordingContext) -> None:
    with pytest.raises(ToolError, match="invalid regular expression"):
        await call(GrepTool(), ctx, pattern="(")


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "a/../../outside.txt", "/workspace/../x", "/work"])
async def test_paths_leaving_the_workspace_are_refused(ctx: RecordingContext, path: str) -> None:
    with pytest.raises(ToolError):
        await call(ReadTool(), ctx, file_path=path)
    with pytest.raises(ToolError):
        await call(WriteTool(), ctx, file_path=path, content="x")


async def test_a_planted_symlink_cannot_make_read_write_or_edit_touch_a_host_file(
    ctx: RecordingContext, outside: Path
) -> None:
    (ctx.workspace / "evil").symlink_to(outside)
    (ctx.workspace / "evildir").symlink_to(outside.parent)
    for tool, args in [
        (ReadTool(), {"file_path": "evil"}),
        (ReadTool(), {"file_path": "evildir/outside.txt"}),
        (WriteTool(), {"file_path": "evildir/outside.txt", "content": "pwned"}),
        (EditTool(), {"file_path": "evil", "old_string": "host", "new_string": "pwned"}),
    ]:
        with pytest.raises(ToolError, match="symbolic link"):
            await call(tool, ctx, **args)
    assert outside.read_text() == "host secret\n"


async def test_writing_over_a_planted_symlink_replaces_the_link_not_its_target(
    ctx: RecordingContext, outside: Path
) -> None:
    (ctx.workspace / "evil").symlink_to(outside)
    with pytest.raises(ToolError, match="symbolic link"):
        await call(WriteTool(), ctx, file_path="evil", content="pwned")
    assert outside.read_text() == "host secret\n"


async def test_a_directory_swapped_for_a_symlink_mid_walk_is_refused(
    ctx: RecordingContext, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic TOCTOU: the swap happens right before the walk opens ``sub``."""
    sub = ctx.workspace / "sub"
    sub.mkdir()
    (sub / "outside.txt").write_text("inside\n")
    real_open = os.open

    def swapping_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if path == "sub" and dir_fd is not None and not sub.is_symlink():
            sub.rename(ctx.workspace / "sub.orig")
            sub.symlink_to(outside.parent)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", swapping_open)
    with pytest.raises(ToolError, match="symbolic link"):
        await call(EditTool(), ctx, file_path="sub/outside.txt", old_string="host", new_string="pwned")
    assert outside.read_text() == "host secret\n"


async def test_glob_and_grep_do_not_follow_links_out(ctx: RecordingContext, outside: Path) -> None:
    (ctx.workspace / "evildir").symlink_to(outside.parent)
    (ctx.workspace / "evil.txt").symlink_to(outside)
    assert "No files" in (await call(GlobTool(), ctx, pattern="**/*.txt")).joined_text()
    assert "No matches" in (await call(GrepTool(), ctx, pattern="secret")).joined_text()


def test_only_read_glob_and_grep_are_read_only() -> None:
    flags = {tool.spec.name: tool.spec.annotations.read_only for tool in file_tools()}
    assert flags == {"read": True, "glob": True, "grep": True, "write": False, "edit": False}
