"""Typed configuration: a YAML file, then environment overrides, then command-line flags.

Every option has a safe default, so ``keyhand serve`` runs with no file at all.
``config.example.yaml`` documents every field (a test keeps the two in step).
Unknown keys are errors: a typo must not silently turn a protection off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import ConfigError

Decision = Literal["allow", "ask", "deny"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(Strict):
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0 picks a free one).")
    public_url: str | None = Field(None, description="URL clients reach the gateway at, if not host:port.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Extra Host header values accepted (DNS-rebinding protection)."
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Extra browser Origin values accepted on /mcp."
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Largest request body accepted.")


class LedgerConfig(Strict):
    max_event_bytes: int = Field(
        16_384, ge=1024, description="Tool output beyond this many bytes is truncated in the ledger."
    )


class AgentProfile(Strict):
    tools: dict[str, Decision] = Field(
        default_factory=dict,
        description="Tool name glob -> allow | ask | deny; the most specific pattern wins. Unmatched tools get"
        " their source's default: built-in allow, upstream and HTTP tools ask.",
    )


class Config(Strict):
    server: ServerConfig = Field(default_factory=lambda: ServerConfig())
    ledger: LedgerConfig = Field(default_factory=lambda: LedgerConfig())
    agents: dict[str, AgentProfile] = Field(default_factory=lambda: {"default": AgentProfile()})
    sandbox: dict[str, Any] = Field(default_factory=dict, description="See tools/sandbox/settings.py.")
    fetch: dict[str, Any] = Field(default_factory=dict, description="See tools/netguard.py.")
    vault: dict[str, Any] = Field(default_factory=dict, description="See vault/settings.py.")

    def profile(self, name: str) -> AgentProfile:
        return self.agents.get(name) or self.agents.get("default") or AgentProfile()


def load(path: Path | None) -> Config:
    """Read the config file (if any) and apply ``KEYHAND_HOST`` / ``KEYHAND_PORT``."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping at the top level")
        raw = loaded or {}
    server = raw.setdefault("server", {}) if isinstance(raw.get("server", {}), dict) else {}
    if "KEYHAND_HOST" in os.environ:
        server["host"] = os.environ["KEYHAND_HOST"]
    if "KEYHAND_PORT" in os.environ:
        server["port"] = os.environ["KEYHAND_PORT"]
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f"in {path}" if path else "in the configuration"
    lines = [f"invalid configuration {where}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def home_dir() -> Path:
    """``$KEYHAND_HOME``, else ``~/.local/share/keyhand``."""
    env = os.environ.get("KEYHAND_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "keyhand"
