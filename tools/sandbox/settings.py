"""Sandbox configuration: the ``sandbox:`` section of the gateway's config.

Self-contained (no import of ``gateway``) so the gateway can embed it as a field;
``extra="forbid"`` so a misspelt option is an error at start, not a silent default.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tools.netguard import FetchSettings

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class SandboxLimits(BaseModel):
    """Resource limits applied to everything a session runs in its sandbox."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Default wall time of one command; the whole process tree is killed after it."
    )
    cpu_s: int = Field(
        600, gt=0, description="CPU seconds per process (RLIMIT_CPU); the kernel sends SIGXCPU then SIGKILL."
    )
    memory_mb: int = Field(
        1024, ge=64, description="Memory in MiB: address space per process (RLIMIT_AS) and, where writable, the cgroup."
    )
    pids: int = Field(
        256, ge=16, description="Processes and threads of the sandbox (RLIMIT_NPROC; the pids cgroup too)."
    )
    file_size_mb: int = Field(1024, ge=1, description="Largest file a process may write, in MiB (RLIMIT_FSIZE).")
    open_files: int = Field(1024, ge=32, description="Open file descriptors per process (RLIMIT_NOFILE).")
    output_bytes: int = Field(
        100_000,
        ge=1_000,
        description="Bytes of stdout+stderr returned per command; the rest is spilled to the workspace.",
    )
    tmp_size_mb: int = Field(256, ge=1, description="Size of the sandbox's private tmpfs /tmp, in MiB.")


class SandboxNetwork(BaseModel):
    """Network rules. Empty ``allow_hosts``: no egress at all (only the sandbox's private loopback)."""

    model_config = ConfigDict(extra="forbid")

    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Host names code in the sandbox may reach over HTTP(S), through a proxy that applies web_fetch's "
        "network guard (HTTP_PROXY/HTTPS_PROXY are set; nothing else leaves). Exact names; '*.example.com' for "
        "its subdomains. Empty: no network at all (only a private loopback).",
    )
    allow_private: list[str] = Field(
        default_factory=list,
        description="Narrow exceptions to the public-address rule for those hosts, as 'ip:port' (e.g. "
        "'127.0.0.1:8080'), like fetch.allow_private. Cloud metadata addresses cannot be excepted.",
    )

    @field_validator("allow_hosts")
    @classmethod
    def _hosts_are_names(cls, entries: list[str]) -> list[str]:
        hosts = [entry.strip().lower().removesuffix(".") for entry in entries]
        for host in hosts:
            name = host.removeprefix("*.")
            if not _NAME.fullmatch(name) or name.replace(".", "").isdigit() or "." not in name:
                raise ValueError(
                    f"allow_hosts entry {host!r} must be a host name like 'api.example.com' or "
                    "'*.example.com' (addresses are never allowed, only names)"
                )
        return hosts

    @field_validator("allow_private")
    @classmethod
    def _exceptions_are_narrow(cls, entries: list[str]) -> list[str]:
        try:
            return FetchSettings(allow_private=entries).allow_private
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


class SandboxSettings(BaseModel):
    """Which backend runs the sessions' sandboxes, with which limits."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["bwrap", "unsafe-subprocess"] = Field(
        "bwrap",
        description="bwrap: bubblewrap namespaces + seccomp (default). unsafe-subprocess: NO isolation, opt-in only.",
    )
    limits: SandboxLimits = Field(default_factory=SandboxLimits, description="Resource limits per sandbox.")
    network: SandboxNetwork = Field(default_factory=SandboxNetwork, description="Network egress rules.")
    idle_stop_s: float = Field(
        900.0, gt=0, description="Stop a sandbox after this many idle seconds; its workspace is kept."
    )
    bwrap_path: str = Field("bwrap", description="The bubblewrap executable (a name looked up in PATH, or a path).")
    python_path: str = Field(
        "/usr/bin/python3",
        description="The Python the in-sandbox supervisor runs with (a path inside the read-only /usr).",
    )
