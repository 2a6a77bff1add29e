"""The ``vault:`` section of the gateway's config."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SPEC = re.compile(r"^(keyring|env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")


class VaultSettings(BaseModel):
    """How the vault finds its master key and when it refreshes tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    master_key: str | None = Field(
        default=None,
        description=(
            "Where the master key comes from: 'keyring' (the OS keyring; refused if no secure backend), "
            "'env:VAR' (base64url 32-byte key in an environment variable) or 'file:PATH' (a key file with "
            "mode 0600). Unset: $KEYHAND_HOME/master.key if it exists, else a secure OS keyring, else a "
            "new 0600 key file in $KEYHAND_HOME (announced at start). Never a plaintext fallback."
        ),
    )
    refresh_leeway_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="Refresh an OAuth access token this many seconds before it expires.",
    )
    token_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="Timeout of each request to a provider's token or revocation endpoint.",
    )
    authorization_ttl_s: float = Field(
        default=600.0,
        gt=0,
        le=3600,
        description="How long an OAuth authorization `state` stays valid after a connection is started.",
    )
    cache_recheck_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description=(
            "Opened credentials are cached in memory; writes by this process invalidate the cache at "
            "once, writes by another process (e.g. the CLI) are noticed within this many seconds."
        ),
    )

    @field_validator("master_key")
    @classmethod
    def _known_form(cls, value: str | None) -> str | None:
        if value is not None and not _SPEC.match(value):
            # the value is not echoed: a user may have pasted the key itself here
            raise ValueError("must be 'keyring', 'env:VAR' or 'file:PATH'")
        return value
