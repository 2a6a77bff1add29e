"""Confined access to a session's workspace from the host, safe against what the sandbox plants.

Code in the sandbox can create symlinks, FIFOs and directories in the workspace at any
time, including while the gateway is working on it. So paths are never resolved and
then opened: every access walks from a descriptor of the workspace root, one
component at a time, with ``O_NOFOLLOW | O_DIRECTORY`` and ``dir_fd``; the final file
is opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file. ``..`` and
absolute paths outside the workspace are refused before any lookup. Writes go to a
temporary file in the same directory (created through the directory descriptor) and
are renamed over the target, which replaces a symlink planted there instead of
following it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools.base import ToolError
from tools.sandbox.protocol import SANDBOX_WORKSPACE

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class PathRefused(ToolError):
    """The path leaves the workspace, goes through a symlink, or is not what the operation needs."""


def workspace_parts(file_path: str) -> list[str]:
    """Split a model-supplied path (``/workspace/x``, ``x`` or ``./x``) into components inside the workspace."""
    if not isinstance(file_path, str) or "\x00" in file_path:
        raise PathRefused("the path must be a string without NUL bytes")
    path = file_path
    if path.startswith("/"):
        if path != SANDBOX_WORKSPACE and not path.startswith(SANDBOX_WORKSPACE + "/"):
            raise PathRefused(f"{file_path!r} is outside the workspace; use a path under {SANDBOX_WORKSPACE}/")
        path = path[len(SANDBOX_WORKSPACE) :]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathRefused(f"{file_path!r}: '..' is not allowed in workspace paths")
    return parts


def display(parts: list[str]) -> str:
    """The path as the sandbox sees it."""
    return "/".join([SANDBOX_WORKSPACE, *parts])


@dataclass(frozen=True, slots=True)
class Entry:
    parts: list[str]
    stat: os.stat_result


class Workspace:
    """File operations confined to one workspace directory (``root`` is trusted: the gateway made it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def directory(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory ``parts``, walked without following symlinks."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                raise PathRefused(f"{display(parts)} does not exist (the workspace is empty)") from None
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root, _DIR_FLAGS)
        try:
            for i, name in enumerate(parts):
                parent, fd = fd, -1  # _step closes the parent whether it succeeds or not
                fd = self._step(parent, name, parts[: i + 1], create)
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def _step(self, parent: int, name: str, so_far: list[str], create: bool) -> int:
        try:
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                except FileExistsError:
                    pass
            child = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            raise self._refusal(exc, parent, name, so_far, "a directory") from None
        finally:
            os.close(parent)
        return child

    @staticmethod
    def _refusal(exc: OSError, parent: int, name: str, parts: list[str], wanted: str) -> PathRefused:
        if exc.errno == errno.ENOENT:
            return PathRefused(f"{display(parts)} does not exist")
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode) or exc.errno == errno.ELOOP:
            return PathRefused(f"{display(parts)} is a symbolic link; file tools do not follow links")
        return PathRefused(f"{display(parts)} is not {wanted} ({exc.strerror})")

    def read_bytes(self, parts: list[str], limit: int) -> tuple[bytes, int]:
        """Up to ``limit`` bytes of a regular file and its size."""
        if not parts:
            raise PathRefused(f"{SANDBOX_WORKSPACE} is a directory, not a file")
        with self.directory(parts[:-1]) as parent:
            try:
                fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=parent)
            except OSError as exc:
                raise self._refusal(exc, parent, parts[-1], parts, "a regular file") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise PathRefused(f"{display(parts)} is not a regular file")
                chunks, left = [], limit
                while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                    chunks.append(chunk)
                    left -= len(chunk)
                return b"".join(chunks), st.st_size
            finally:
                os.close(fd)

    def write_bytes(self, parts: list[str], data: bytes) -> None:
        """Atomically replace (or create) a regular file: temp file in the same directory, then rename."""
        if not parts:
            raise PathRefused(f"{SANDBOX_WORKSPACE} is a directory, not a file")
        name = parts[-1]
        with self.directory(parts[:-1], create=True) as parent:
            try:
                existing: os.stat_result | None = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and stat.S_ISLNK(existing.st_mode):
                raise PathRefused(f"{display(parts)} is a symbolic link; file tools do not follow links")
            if existing is not None and not stat.S_ISREG(existing.st_mode):
                raise PathRefused(f"{display(parts)} exists and is not a regular file")
            owner = existing or os.fstat(parent)
            tmp = f".{name[:200]}.keyhand-{secrets.token_hex(6)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent)
            try:
                _write_all(fd, data)
                if existing is not None:
                    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
                if os.geteuid() == 0:  # keep files owned like their directory, not by the gateway's root
                    os.fchown(fd, owner.st_uid, owner.st_gid)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp, dir_fd=parent)
                raise
            os.close(fd)
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)

    def walk(self, parts: list[str], *, max_entries: int) -> Iterator[Entry]:
        """Regular files under ``parts`` (or ``parts`` itself if it is one); never follows links."""
        with self.directory(parts[:-1]) as parent:
            if parts:
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False) if _exists(parent, parts[-1]) else None
                if st is None:
                    raise PathRefused(f"{display(parts)} does not exist")
                if stat.S_ISREG(st.st_mode):
                    yield Entry(parts, st)
                    return
        with self.directory(parts) as top:
            budget = [max_entries]
            yield from _walk_fd(os.dup(top), parts, budget)


def _exists(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _walk_fd(fd: int, parts: list[str], budget: list[int]) -> Iterator[Entry]:
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in sorted(entries, key=lambda e: e.name):
            budget[0] -= 1
            if budget[0] < 0:
                return
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                yield Entry([*parts, entry.name], st)
            elif stat.S_ISDIR(st.st_mode):
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # swapped for a link or removed meanwhile: skip it
                yield from _walk_fd(child, [*parts, entry.name], budget)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
