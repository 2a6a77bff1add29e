"""Sandbox settings validate strictly, and a backend that cannot run says how to fix it instead of falling back."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from tests.sandbox_helpers import make_context, small_settings
from tools.sandbox import SandboxSettings, SandboxUnavailable, backend_for, running_pool
from tools.sandbox.bwrap import BwrapBackend
from tools.sandbox.seccomp import ARCHES, build_filter

pytestmark = pytest.mark.anyio


def test_defaults_match_the_documented_safe_values() -> None:
    settings = SandboxSettings()
    assert settings.backend == "bwrap" and settings.network.allow_hosts == []
    assert (settings.limits.timeout_s, settings.limits.memory_mb, settings.limits.pids) == (120, 1024, 256)
    assert settings.limits.output_bytes == 100_000


def test_a_misspelt_option_is_an_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="memory_mib"):
        SandboxSettings.model_validate({"limits": {"memory_mib": 10}})


def test_every_field_is_described() -> None:
    schema = SandboxSettings.model_json_schema()
    models = [schema, *schema["$defs"].values()]
    undescribed = [(m["title"], name) for m in models for name, f in m["properties"].items() if "description" not in f]
    assert undescribed == []


def test_a_missing_bubblewrap_is_refused_with_the_install_command() -> None:
    settings = SandboxSettings(bwrap_path="/nonexistent/bwrap")
    assert "apt-get install bubblewrap" in BwrapBackend(settings).viability().reason
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        backend_for(settings)


def test_a_network_allowlist_is_served_by_the_bwrap_backend() -> None:
    assert backend_for(SandboxSettings.model_validate({"network": {"allow_hosts": ["example.com"]}})).name == "bwrap"


def test_the_seccomp_filter_assembles_for_every_supported_architecture() -> None:
    for arch in ARCHES.values():
        program = build_filter(arch)
        assert len(program) % 8 == 0 and 0 < len(program) // 8 < 4096


async def test_a_running_pool_destroys_its_sandboxes_on_exit(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    async with running_pool(small_settings("bwrap"), tmp_path / "workspaces") as pool:
        await pool.exec(ctx, "true", timeout_s=10)
        sandbox = pool.get_existing(ctx.session_id)
    assert sandbox is not None and not await sandbox.alive()
    assert ctx.types() == ["sandbox.provisioned", "sandbox.stopped"]


async def test_a_workspace_outside_the_pools_root_is_refused(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "elsewhere")
    async with running_pool(small_settings("bwrap"), tmp_path / "workspaces") as pool:
        with pytest.raises(SandboxUnavailable, match="not under"):
            await pool.exec(ctx, "true", timeout_s=10)
