"""What the vault hands out: listings without secrets, and the opened credential for one call."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from enum import StrEnum

from vault.secret import Secret

SHARED = "shared"
"""The owner name of credentials every principal may use (stored as ``owner=None``)."""


class Kind(StrEnum):
    OAUTH2 = "oauth2"
    BEARER = "bearer"
    API_KEY = "api_key"
    BASIC = "basic"


class Status(StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"


class AuthMethod(StrEnum):
    """How the client authenticates at the token endpoint (RFC 7591 §2 names)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A credential as every listing shows it. There is no secret here, by construction."""

    id: str
    name: str
    kind: Kind
    owner: str | None
    status: Status
    created_at: float
    updated_at: float
    expires_at: float | None = None
    scopes: tuple[str, ...] = ()
    header: str | None = None
    provider: str | None = None
    resource: str | None = None


@dataclass(frozen=True, slots=True)
class TokenSet:
    """An OAuth 2.0 token response (RFC 6749 §5.1) with the expiry made absolute."""

    access_token: Secret
    refresh_token: Secret | None = None
    expires_at: float | None = None
    scopes: tuple[str, ...] = ()
    token_type: str = "Bearer"


@dataclass(frozen=True, slots=True)
class UsableCredential:
    """A credential opened for one outbound call: inject it, never log or return it."""

    info: CredentialInfo
    secret: Secret
    """bearer/oauth2: the token; api_key: the key; basic: the password."""
    username: str | None = None
    extra_secrets: tuple[Secret, ...] = field(default=(), repr=False)

    def header(self) -> tuple[str, Secret]:
        """The header name and value that carry this credential (Bearer, API key or Basic)."""
        kind = self.info.kind
        if kind is Kind.API_KEY:
            return self.info.header or "X-API-Key", self.secret
        if kind is Kind.BASIC:
            pair = f"{self.username}:{self.secret.reveal()}".encode()
            return "Authorization", Secret("Basic " + base64.b64encode(pair).decode())
        return "Authorization", Secret("Bearer " + self.secret.reveal())


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """An OAuth 2.0 provider the gateway can connect credentials to (no secret here)."""

    name: str
    authorization_url: str
    token_url: str
    client_id: str
    revocation_url: str | None = None
    default_scopes: tuple[str, ...] = ()
    token_endpoint_auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A stored provider as listings show it: its config, and whether a client secret is held."""

    id: str
    config: ProviderConfig
    has_client_secret: bool
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True, slots=True)
class AuthorizationStart:
    """What the gateway sends the user to, and the `state` it will see again at the callback."""

    url: str
    state: str
    expires_at: float
