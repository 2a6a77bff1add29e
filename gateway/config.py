"""Typed configuration: a YAML file, then environment overrides, then command-line flags.

Every option has a safe default, so ``keyhand serve`` runs with no file at all.
``config.example.yaml`` documents every field (a test keeps the two in step).
Unknown keys are errors: a typo must not silently turn a protection off.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import ConfigError
from tools.netguard import FetchSettings
from tools.sandbox.settings import SandboxSettings
from vault.settings import VaultSettings

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


class Inject(Strict):
    """Where a credential goes: a header with a format, or an environment variable (stdio upstreams)."""

    header: str | None = Field(
        None,
        description="Header to set; default by credential kind (Authorization, or "
        "the api_key credential's own header).",
    )
    format: str | None = Field(
        None,
        description="Header value with {secret} (and {username}); default by kind: "
        "'Bearer {secret}', the bare key, or HTTP Basic.",
    )
    env: str | None = Field(None, description="For stdio upstreams: the environment variable that gets the secret.")


class UpstreamConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Tools appear as <name>__<tool>.")
    url: str | None = Field(None, description="Streamable HTTP endpoint of the upstream MCP server.")
    command: list[str] | None = Field(None, description="Or: an stdio MCP server Keyhand starts itself.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for an stdio upstream.")
    credential: str | None = Field(None, description="Name of the vault credential to inject.")
    inject: Inject = Field(default_factory=lambda: Inject(), description="Where the credential goes.")
    allow_unauthenticated: bool = Field(False, description="Call without a credential when none is usable.")
    timeout_s: float = Field(60.0, gt=0, description="Longest a single tool call may take.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Longest connecting and initializing may take.")

    @model_validator(mode="after")
    def _one_transport(self) -> UpstreamConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError(f"upstream {self.name!r}: give exactly one of `url` or `command`")
        if "__" in self.name:
            raise ValueError(f"upstream {self.name!r}: the name may not contain '__'")
        return self


class HttpToolConfig(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Tool name as the agent sees it.")
    description: str = Field(description="What the tool does, for the model.")
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"}, description="JSON Schema of the arguments."
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field("GET", description="HTTP method.")
    url: str = Field(description="URL template; {arg} placeholders are filled from the arguments.")
    query: list[str] = Field(default_factory=list, description="Arguments sent in the query string.")
    body: list[str] | Literal["rest"] | None = Field(
        None, description="Arguments sent as a JSON body: a list of names, or 'rest' for all not used elsewhere."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Fixed extra request headers.")
    credential: str | None = Field(None, description="Vault credential to inject.")
    inject: Inject = Field(default_factory=lambda: Inject(), description="Where the credential goes.")
    allow_unauthenticated: bool = Field(False, description="Call without a credential when none is usable.")
    read_only: bool = Field(False, description="Annotate the tool as read-only (no side effects).")
    timeout_s: float = Field(30.0, gt=0, description="Request timeout.")
    max_response_bytes: int = Field(1_000_000, gt=0, description="Longest response body returned.")

    @model_validator(mode="after")
    def _check(self) -> HttpToolConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"http tool {self.name!r}: url must start with http:// or https://")
        if any(h.lower() == "authorization" for h in self.headers):
            raise ValueError(f"http tool {self.name!r}: put credentials in the vault, not in `headers`")
        return self

    @property
    def path_params(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.url) if name]


class ProviderEntry(Strict):
    """An OAuth 2.0 provider from the config; copied into the vault at start (its secret sealed there)."""

    name: str = Field(description="Provider name, as `keyhand vault connect NAME` and the admin API use it.")
    authorization_url: str = Field(description="The authorization endpoint (RFC 6749 §3.1).")
    token_url: str = Field(description="The token endpoint (RFC 6749 §3.2).")
    revocation_url: str | None = Field(None, description="The revocation endpoint (RFC 7009), if any.")
    client_id: str = Field(description="Keyhand's client id at this provider.")
    client_secret: str | None = Field(
        None, description="Where the client secret is: env:VAR or file:PATH (never the secret itself)."
    )
    default_scopes: list[str] = Field(default_factory=list, description="Scopes asked for unless a connect names some.")
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = Field(
        "client_secret_basic", description="How Keyhand authenticates at the token endpoint."
    )

    @model_validator(mode="after")
    def _secret_reference(self) -> ProviderEntry:
        if self.client_secret is not None and not self.client_secret.startswith(("env:", "file:")):
            raise ValueError(f"provider {self.name!r}: client_secret must be env:VAR or file:PATH, not the secret")
        return self


class OAuthConfig(Strict):
    client_name: str = Field("Keyhand", description="The client name Keyhand registers under (RFC 7591).")
    client_metadata_url: str | None = Field(
        None,
        description="An https URL where Keyhand's client ID metadata document is served (used as client_id where "
        "the authorization server supports it); default: <server.public_url>/oauth/client-metadata.json when "
        "that is https, else none.",
    )
    providers: list[ProviderEntry] = Field(default_factory=list, description="OAuth providers known from the start.")


class Config(Strict):
    server: ServerConfig = Field(default_factory=lambda: ServerConfig())
    ledger: LedgerConfig = Field(default_factory=lambda: LedgerConfig())
    agents: dict[str, AgentProfile] = Field(default_factory=lambda: {"default": AgentProfile()})
    sandbox: SandboxSettings = Field(default_factory=lambda: SandboxSettings())
    fetch: FetchSettings = Field(default_factory=lambda: FetchSettings())
    vault: VaultSettings = Field(default_factory=lambda: VaultSettings())
    upstreams: list[UpstreamConfig] = Field(default_factory=list, description="Upstream MCP servers.")
    http_tools: list[HttpToolConfig] = Field(default_factory=list, description="Declarative HTTP tools.")
    oauth: OAuthConfig = Field(default_factory=lambda: OAuthConfig(), description="OAuth clients and providers.")

    @model_validator(mode="after")
    def _unique_upstreams(self) -> Config:
        names = [u.name for u in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("two upstreams have the same name")
        tools = [t.name for t in self.http_tools]
        if len(tools) != len(set(tools)):
            raise ValueError("two http_tools have the same name")
        return self

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
