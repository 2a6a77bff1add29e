"""Best-effort cgroup limits for a sandbox's whole process tree.

rlimits are always applied (by the supervisor) but count per process, or per user
(``RLIMIT_NPROC``) and not at all for host root: when the gateway runs as root the
kernel never enforces ``RLIMIT_NPROC``, so a pids cgroup is what stops a fork bomb.
Where the gateway may create cgroups (cgroup v2 with the ``pids``/``memory``
controllers delegated to its own cgroup, or writable cgroup v1 hierarchies) each
sandbox gets one, joined before ``bwrap`` starts so that nothing escapes it. Where it
may not, :func:`create_cgroup` returns None and the rlimits stand alone.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass(slots=True)
class Cgroup:
    """The directories of one sandbox's cgroup (one per v1 hierarchy, or one v2 directory)."""

    dirs: list[Path]
    version: int

    @property
    def limits_memory(self) -> bool:
        return self.version == 2 or any((d / "memory.limit_in_bytes").exists() for d in self.dirs)

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer has killed in this cgroup so far."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for d in self.dirs:
            with contextlib.suppress(OSError):
                for line in (d / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def remove(self) -> None:
        """Remove the directories (possible once every process in them has exited)."""
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


def create_cgroup(name: str, *, pids: int, memory_bytes: int) -> Cgroup | None:
    """Create a limited cgroup for one sandbox, or None where this process may not."""
    own = _own_cgroups()
    if "" in own:
        found = _try_create(ROOT / own[""].lstrip("/") / name, {"pids.max": pids, "memory.max": memory_bytes})
        if found:
            return Cgroup(found, 2)
    dirs: list[Path] = []
    for controller, limits in (("pids", {"pids.max": pids}), ("memory", {"memory.limit_in_bytes": memory_bytes})):
        if controller in own:
            dirs += _try_create(ROOT / controller / own[controller].lstrip("/") / name, limits)
    return Cgroup(dirs, 1) if dirs else None


def _own_cgroups() -> dict[str, str]:
    """Map controller ('' for the v2 hierarchy) to this process's cgroup path."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(","):
                out[c] = path
    if "" in out and not (ROOT / "cgroup.controllers").exists():
        del out[""]  # a hybrid host's v2 tree at /sys/fs/cgroup/unified holds no controllers
    return out


def _try_create(directory: Path, limits: dict[str, int]) -> list[Path]:
    try:
        directory.mkdir(exist_ok=True)
    except OSError:
        return []
    try:
        for key, value in limits.items():
            (directory / key).write_text(str(value))
    except OSError:
        with contextlib.suppress(OSError):
            directory.rmdir()
        return []
    if not os.access(directory / "cgroup.procs", os.W_OK):
        return []
    return [directory]
