"""OAuth 2.0 token lifecycle: refresh before expiry (single-flight), PKCE connections, revocation.

Token endpoint work goes through authlib's ``AsyncOAuth2Client``, which runs on
``httpx2`` (authlib >= 1.9 imports it natively). Refresh follows authlib's
``ensure_active_token`` (a leeway before expiry, a callback that persists the
new token) but is *single-flight across callers*: the first caller that finds a
token due starts one refresh task per credential id, every other caller awaits
that same task, and the task re-reads the row first, so a refresh someone else
just finished is not repeated. Under any number of concurrent callers one
request goes out.

Connections are always authorization code + PKCE S256 (RFC 7636 §4.2) with an
optional RFC 8707 ``resource``. The ``state`` is random, single-use (removed on
first sight, success or not), expires after ``authorization_ttl_s`` and
remembers who started the flow. Pending flows live in memory: the process that
built the URL is the one whose ``/oauth/callback`` receives the code.

Events go to ``on_event(type, data)``: ``credential.refreshed``,
``credential.failed``, ``credential.connected``, ``credential.revoked``; data
holds names, ids, expiry and error codes, never a value.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from vault import rows
from vault.errors import AuthorizationStateError, NeedsReauth, NotFound, TokenEndpointError
from vault.models import AuthorizationStart, CredentialInfo, Kind, ProviderInfo, Status, TokenSet
from vault.secret import Secret
from vault.settings import VaultSettings

if TYPE_CHECKING:
    from vault.store import VaultStore


@dataclass(frozen=True, slots=True)
class _Pending:
    provider: str
    name: str
    owner: str | None
    redirect_uri: str
    code_verifier: Secret
    resource: str | None
    started_by: str | None
    expires_at: float


class TokenLifecycle:
    """Refresh, connect and revoke OAuth2 credentials of one store; reached as ``store.tokens``."""

    def __init__(self, store: VaultStore, settings: VaultSettings, on_event: Callable[[str, dict[str, Any]], None]):
        self._store = store
        self._settings = settings
        self._emit = on_event
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, _Pending] = {}

    def is_due(self, info: CredentialInfo) -> bool:
        """True when the access token expires within the leeway (or already has)."""
        return info.expires_at is not None and info.expires_at - self._settings.refresh_leeway_s <= time.time()

    async def ensure_fresh(self, info: CredentialInfo) -> bool:
        """Refresh ``info``'s token if due; True if a refresh ran. Raises NeedsReauth, TokenEndpointError."""
        if info.status is Status.NEEDS_REAUTH:
            raise _needs_reauth(info, "it was marked needs_reauth after a failed refresh")
        if not self.is_due(info):
            return False
        await self._single_flight(info.id, force=False)
        return True

    async def refresh(self, name: str, *, owner: str | None) -> CredentialInfo:
        """Refresh now, whatever the expiry (admin ``POST .../refresh``). Raises NotFound, TokenError."""
        info = next((i for i in await self._store.list_credentials() if i.name == name and i.owner == owner), None)
        if info is None or info.kind is not Kind.OAUTH2:
            raise NotFound(f"no OAuth2 credential {name!r} owned by {owner or 'shared'}")
        await self._single_flight(info.id, force=True)
        return (await self._store.oauth_tokens(info.id))[0]

    async def _single_flight(self, credential_id: str, *, force: bool) -> None:
        task = self._inflight.get(credential_id)
        if task is None:
            task = asyncio.create_task(self._refresh(credential_id, force=force))
            self._inflight[credential_id] = task
            task.add_done_callback(lambda t: self._settle(credential_id, t))
        await asyncio.shield(task)  # a cancelled caller must not cancel everyone's refresh

    def _settle(self, credential_id: str, task: asyncio.Task[None]) -> None:
        self._inflight.pop(credential_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here so that a refresh nobody awaited any more does not warn

    async def _refresh(self, credential_id: str, *, force: bool) -> None:
        info, tokens = await self._store.oauth_tokens(credential_id)
        if not force and not self.is_due(info):
            return  # refreshed by someone else meanwhile
        still_valid = info.expires_at is not None and info.expires_at > time.time()
        if tokens.refresh_token is None:
            if still_valid and not force:
                return
            await self._fail(info, "no_refresh_token", reauth=True)
            raise _needs_reauth(info, "it expired and the provider gave no refresh token")
        provider, client_secret = await self._store.providers.client_secret(info.provider or "")
        try:
            new = await request_refresh(
                provider, client_secret, tokens.refresh_token, resource=info.resource, timeout=self._timeout
            )
        except NeedsReauth:
            await self._fail(info, "invalid_grant", reauth=True)
            raise _needs_reauth(info, f"provider {provider.name} answered invalid_grant") from None
        except TokenEndpointError as exc:
            await self._fail(info, exc.code or "token_endpoint_error", reauth=False)
            if still_valid and not force:
                return  # the current token still works; the next call tries again
            raise
        merged = TokenSet(
            new.access_token, new.refresh_token or tokens.refresh_token, new.expires_at, new.scopes or tokens.scopes
        )
        saved = await self._store.save_tokens(credential_id, merged)
        self._emit("credential.refreshed", {"credential": info.name, "id": info.id, "expires_at": saved.expires_at})

    async def _fail(self, info: CredentialInfo, code: str, *, reauth: bool) -> None:
        if reauth:
            await self._store.mark_needs_reauth(info.id)
        self._emit("credential.failed", {"credential": info.name, "id": info.id, "code": code, "needs_reauth": reauth})

    @property
    def _timeout(self) -> float:
        return self._settings.token_timeout_s

    # -- connecting: authorization code + PKCE -----------------------------------------------

    async def begin_connect(
        self,
        provider: str,
        *,
        name: str,
        owner: str | None,
        redirect_uri: str,
        scopes: tuple[str, ...] | None = None,
        resource: str | None = None,
        started_by: str | None = None,
    ) -> AuthorizationStart:
        """Build the authorization URL (state, S256 code_challenge, RFC 8707 resource) to send the user to."""
        info = await self._store.providers.get(provider)
        rows.check_name(name)
        rows.owner_key(owner)
        verifier, state = Secret(secrets.token_urlsafe(64)), secrets.token_urlsafe(32)
        params: dict[str, Any] = {"scope": " ".join(scopes if scopes is not None else info.config.default_scopes)}
        if resource:
            params["resource"] = resource
        async with _client(info, None, self._timeout, redirect_uri=redirect_uri) as client:
            url, _ = client.create_authorization_url(
                info.config.authorization_url, state=state, code_verifier=verifier.reveal(), **params
            )
        now = time.time()
        self._pending = {k: p for k, p in self._pending.items() if p.expires_at > now}
        expires = now + self._settings.authorization_ttl_s
        self._pending[state] = _Pending(provider, name, owner, redirect_uri, verifier, resource, started_by, expires)
        return AuthorizationStart(url=url, state=state, expires_at=expires)

    async def finish_connect(
        self, state: str, *, code: str | None, error: str | None = None, started_by: str | None = None
    ) -> CredentialInfo:
        """Finish a flow at the callback: check state, exchange the code, store the tokens.

        Raises AuthorizationStateError (unknown, replayed, expired state, or started
        by someone else), NeedsReauth (the provider refused the code: invalid_grant),
        TokenEndpointError (the provider refused otherwise, or failed). Nothing is
        stored unless the exchange succeeded.
        """
        pending = self._pending.pop(state, None)  # single use, whatever happens next
        if pending is None or pending.expires_at <= time.time():
            raise AuthorizationStateError(
                "this authorization link is unknown, used or expired; start the connection again"
            )
        if started_by is not None and started_by != pending.started_by:
            raise AuthorizationStateError("this authorization was started by someone else; start your own connection")
        if error or not code:
            raise TokenEndpointError(
                f"the provider did not authorize the connection ({error or 'no code'})", code=error
            )
        provider, client_secret = await self._store.providers.client_secret(pending.provider)
        try:
            tokens = await exchange_code(
                provider, client_secret, code=code, code_verifier=pending.code_verifier,
                redirect_uri=pending.redirect_uri, resource=pending.resource, timeout=self._timeout,
            )  # fmt: skip
        except NeedsReauth:  # RFC 6749 §5.2: the code is not good for this client and redirect URI
            raise NeedsReauth(
                f"provider {provider.name} refused the authorization code (invalid_grant): it is expired, "
                "already used, or was issued for another redirect URI or client; start the connection again",
                code="invalid_grant",
            ) from None
        info = await self._store.put_oauth2(
            pending.name, tokens, provider=pending.provider, owner=pending.owner, resource=pending.resource
        )
        self._emit("credential.connected", {"credential": info.name, "id": info.id, "provider": provider.name})
        return info

    async def revoke(self, name: str, *, owner: str | None) -> CredentialInfo:
        """Revoke at the provider (RFC 7009) when it has a revocation URL, then delete. Raises TokenError."""
        info = next((i for i in await self._store.list_credentials() if i.name == name and i.owner == owner), None)
        if info is None:
            raise NotFound(f"no credential {name!r} owned by {owner or 'shared'}")
        if info.kind is Kind.OAUTH2 and info.provider:
            _, tokens = await self._store.oauth_tokens(info.id)
            provider, client_secret = await self._store.providers.client_secret(info.provider)
            if provider.config.revocation_url:
                for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
                    if token is not None:
                        await revoke_token(provider, client_secret, token, hint=hint, timeout=self._timeout)
        deleted = await self._store.delete_credential(name, owner=owner)
        self._emit("credential.revoked", {"credential": info.name, "id": info.id})
        return deleted


# -- token endpoint calls (authlib on httpx2) ------------------------------------------------


async def request_refresh(
    provider: ProviderInfo, client_secret: Secret | None, refresh_token: Secret, *, resource: str | None, timeout: float
) -> TokenSet:
    """RFC 6749 §6 refresh. Raises NeedsReauth on invalid_grant, TokenEndpointError otherwise."""
    extra = {"resource": resource} if resource else {}
    async with _client(provider, client_secret, timeout) as client:
        token = await _call(
            provider, client.refresh_token(provider.config.token_url, refresh_token=refresh_token.reveal(), **extra)
        )
    return _token_set(provider, token)


async def exchange_code(
    provider: ProviderInfo,
    client_secret: Secret | None,
    *,
    code: str,
    code_verifier: Secret,
    redirect_uri: str,
    resource: str | None,
    timeout: float,
) -> TokenSet:
    """RFC 6749 §4.1.3 code exchange with the PKCE verifier (RFC 7636 §4.5)."""
    extra = {"resource": resource} if resource else {}
    async with _client(provider, client_secret, timeout, redirect_uri=redirect_uri) as client:
        call = client.fetch_token(provider.config.token_url, code=code, code_verifier=code_verifier.reveal(), **extra)
        token = await _call(provider, call)
    return _token_set(provider, token)


async def revoke_token(
    provider: ProviderInfo, client_secret: Secret | None, token: Secret, *, hint: str, timeout: float
) -> None:
    """RFC 7009 §2.1 revocation; a 200 (even for an unknown token) is success."""
    url = provider.config.revocation_url or ""
    async with _client(provider, client_secret, timeout) as client:
        try:
            response = await client.revoke_token(url, token=token.reveal(), token_type_hint=hint)
        except httpx2.HTTPError as exc:
            raise TokenEndpointError(f"provider {provider.name}: revocation failed ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise TokenEndpointError(
            f"provider {provider.name}: revocation answered HTTP {response.status_code}", code=str(response.status_code)
        )


def _client(
    provider: ProviderInfo, client_secret: Secret | None, timeout: float, *, redirect_uri: str | None = None
) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=provider.config.client_id,
        client_secret=client_secret.reveal() if client_secret else None,
        token_endpoint_auth_method=provider.config.token_endpoint_auth_method.value,
        revocation_endpoint_auth_method=provider.config.token_endpoint_auth_method.value,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=timeout,
    )


async def _call(provider: ProviderInfo, call: Any) -> dict[str, Any]:
    """Await an authlib token call, turning its failures into ours (no provider text echoed)."""
    try:
        token: dict[str, Any] = await call
    except OAuthError as exc:
        code = str(exc.error)
        if code == "invalid_grant":
            raise NeedsReauth(f"provider {provider.name} answered invalid_grant", code=code) from None
        raise TokenEndpointError(f"provider {provider.name} refused the token request: {code}", code=code) from None
    except httpx2.HTTPStatusError as exc:
        status = exc.response.status_code
        raise TokenEndpointError(
            f"provider {provider.name}: token endpoint answered HTTP {status}", code=str(status)
        ) from None
    except httpx2.HTTPError as exc:
        raise TokenEndpointError(
            f"provider {provider.name}: token endpoint unreachable ({type(exc).__name__})"
        ) from None
    except ValueError:
        raise TokenEndpointError(f"provider {provider.name}: token endpoint sent a response that is not JSON") from None
    return token


def _token_set(provider: ProviderInfo, token: dict[str, Any]) -> TokenSet:
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenEndpointError(f"provider {provider.name}: the token response has no access_token")
    refresh = token.get("refresh_token")
    expires_at = token.get("expires_at")
    scope = token.get("scope") or ""
    return TokenSet(
        access_token=Secret(access),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
        expires_at=float(expires_at) if expires_at is not None else None,
        scopes=tuple(scope.split()) if isinstance(scope, str) else tuple(scope),
        token_type=str(token.get("token_type", "Bearer")),
    )


def _needs_reauth(info: CredentialInfo, why: str) -> NeedsReauth:
    return NeedsReauth(
        f"credential {info.name!r} needs to be reconnected ({why}); run `keyhand vault connect "
        f"{info.provider or '<provider>'}` or start a new connection through the admin API",
        credential=info.name,
        code="invalid_grant",
    )
