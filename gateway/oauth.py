"""Connecting OAuth credentials: the flows the admin API starts and ``/oauth/*`` finishes.

    GET /oauth/start/{id}             the link an admin opens: binds the flow to this browser, then
                                      redirects to the provider's authorization endpoint
    GET /oauth/callback               the provider sends the browser back here (RFC 6749 §4.1.2)
    GET /oauth/client-metadata.json   Keyhand's client ID metadata document (for MCP authorization)

These routes are reached by a person's browser, so they are outside ``/v1`` and
the bearer-key middleware. What protects them:

* ``state`` (RFC 6749 §10.12) is 256 random bits, single-use (the vault forgets
  it on first sight, success or not) and expires after ``vault.authorization_ttl_s``.
* The flow is bound to who started it *and* to the browser that finishes it.
  ``POST /v1/admin/connections`` records the admin principal (the vault's
  ``started_by``) and answers a Keyhand link, not the provider's URL. The first
  visit to that link sets an HttpOnly, ``SameSite=Lax`` cookie (``Secure`` behind
  https) holding a fresh random nonce, scoped to ``/oauth/callback``; the link
  then redirects to the provider and cannot be used again. The callback
  finishes the flow only if the browser presents that cookie (a Lax cookie is
  sent on the provider's top-level redirect back). A leaked authorization URL or
  a forged callback (login CSRF, code injection, RFC 9700 §4.2.4) therefore fails
  in any other browser, and the state is spent either way.
* Every page is a short HTML answer with every dynamic value HTML-escaped,
  ``no-store`` and a ``default-src 'none'`` CSP. Nothing is stored unless the
  code exchange succeeded (the vault writes only after the token response).

Pending flows live in this process's memory, like the vault's pending states:
the gateway that built the link is the one that receives the callback.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway import mcp_auth
from gateway.auth import Principal
from gateway.errors import ApiError, BadRequest, ConfigError, Conflict, NotFound
from gateway.runtime import Runtime
from vault import errors as vault_errors
from vault.models import SHARED, AuthMethod, ProviderConfig
from vault.secret import Secret
from vault.store import VaultStore

log = logging.getLogger("keyhand.oauth")

CALLBACK_PATH = "/oauth/callback"
METADATA_PATH = "/oauth/client-metadata.json"
_KEEP_FINISHED_S = 600.0


class ProviderFailed(ApiError):
    """The provider (token, registration or revocation endpoint) failed; trying again may work."""

    status = 502
    code = "provider_error"


def api_error_of(exc: vault_errors.VaultError) -> ApiError:
    """The HTTP answer for a vault error; vault messages never hold a secret."""
    if isinstance(exc, vault_errors.NotFound):
        return NotFound(str(exc))
    if isinstance(exc, vault_errors.AlreadyExists):
        return Conflict(str(exc))
    if isinstance(exc, vault_errors.NeedsReauth):
        return Conflict(str(exc))
    if isinstance(exc, vault_errors.TokenError):
        return ProviderFailed(str(exc))
    return BadRequest(str(exc))


@dataclass
class Flow:
    """One connection in progress, as the admin API reports it (no secret, no code)."""

    id: str
    state: str
    provider_url: str
    principal: str
    credential: str
    owner: str | None
    expires_at: float
    binding: str | None = None
    status: str = "pending"
    message: str = "waiting for the browser to open the authorization link"
    finished_at: float | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "message": self.message,
            "credential": {"name": self.credential, "owner": self.owner or SHARED},
            "expires_at": self.expires_at,
        }


def public_base(rt: Runtime, request: Request) -> str:
    """``server.public_url`` without a trailing ``/mcp``, else the address this request reached."""
    configured = rt.config.server.public_url
    if configured:
        return configured.rstrip("/").removesuffix("/mcp")
    return str(request.base_url).rstrip("/")


def client_metadata_url(rt: Runtime) -> str | None:
    """Our client ID metadata document's URL, if an authorization server could fetch it (https only)."""
    if rt.config.oauth.client_metadata_url:
        return rt.config.oauth.client_metadata_url
    public = rt.config.server.public_url
    if public and public.startswith("https://"):
        return public.rstrip("/").removesuffix("/mcp") + METADATA_PATH
    return None


class Connections:
    """The flows of this process, and the ``/oauth/*`` routes that finish them."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._flows: dict[str, Flow] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/start/{id}", self.open_link, methods=["GET"]),
            Route(CALLBACK_PATH, self.callback, methods=["GET"]),
            Route(METADATA_PATH, self.client_metadata, methods=["GET"]),
        ]

    @property
    def vault(self) -> VaultStore:
        if self.rt.vault is None:
            raise ConfigError("the vault is not open in this process")
        return self.rt.vault

    # -- starting (called by the admin API) ------------------------------------------------

    async def start_provider(
        self,
        principal: Principal,
        base: str,
        *,
        provider: str,
        name: str,
        owner: str | None,
        scopes: tuple[str, ...] | None,
    ) -> Flow:
        """A code flow with a configured provider. Raises NotFound, BadRequest."""
        try:
            start = await self.vault.tokens.begin_connect(
                provider, name=name, owner=owner, redirect_uri=base + CALLBACK_PATH, scopes=scopes,
                started_by=principal.name,
            )  # fmt: skip
        except vault_errors.VaultError as exc:
            raise api_error_of(exc) from None
        return self._remember(start.url, start.state, start.expires_at, principal, name, owner)

    async def start_mcp(
        self,
        principal: Principal,
        base: str,
        *,
        server_url: str,
        name: str,
        owner: str | None,
        scopes: tuple[str, ...] | None,
        client_id: str | None = None,
        client_secret: Secret | None = None,
    ) -> Flow:
        """Discover and register at an MCP server's authorization server, then a code flow with ``resource``."""
        identity = mcp_auth.ClientIdentity(
            base + CALLBACK_PATH, self.rt.config.oauth.client_name, client_metadata_url(self.rt)
        )
        async with httpx2.AsyncClient(timeout=mcp_auth.TIMEOUT_S, follow_redirects=False) as http:
            found = await mcp_auth.discover(server_url, http)
            registration = await mcp_auth.register(
                found, identity, http, client_id=client_id, client_secret=client_secret
            )
        provider = _mcp_provider_name(name, owner)
        config = mcp_auth.provider_config(provider, found, registration)
        try:
            await self._upsert(config, registration.client_secret)
            start = await self.vault.tokens.begin_connect(
                provider, name=name, owner=owner, redirect_uri=identity.redirect_uri,
                scopes=scopes if scopes is not None else (found.scopes or ()), resource=found.resource,
                started_by=principal.name,
            )  # fmt: skip
        except vault_errors.VaultError as exc:
            raise api_error_of(exc) from None
        return self._remember(start.url, start.state, start.expires_at, principal, name, owner)

    def status(self, flow_id: str) -> Flow:
        flow = self._flows.get(flow_id)
        if flow is None:
            raise NotFound(
                f"no connection {flow_id!r} in progress on this gateway (they last {_KEEP_FINISHED_S:.0f} s)"
            )
        return flow

    async def sync_config_providers(self) -> None:
        """Copy ``oauth.providers`` from the config into the vault (the config wins). Raises ConfigError."""
        for entry in self.rt.config.oauth.providers:
            secret = _read_secret_reference(entry.client_secret) if entry.client_secret else None
            config = ProviderConfig(
                name=entry.name, authorization_url=entry.authorization_url, token_url=entry.token_url,
                client_id=entry.client_id, revocation_url=entry.revocation_url,
                default_scopes=tuple(entry.default_scopes),
                token_endpoint_auth_method=AuthMethod(entry.token_endpoint_auth_method),
            )  # fmt: skip
            try:
                await self._upsert(config, secret)
            except vault_errors.VaultError as exc:
                raise ConfigError(f"oauth.providers {entry.name!r}: {exc}") from None

    async def _upsert(self, config: ProviderConfig, secret: Secret | None) -> None:
        try:
            await self.vault.providers.add(config, secret)
        except vault_errors.AlreadyExists:
            await self.vault.providers.update(config, secret)

    def _remember(
        self, url: str, state: str, expires_at: float, principal: Principal, name: str, owner: str | None
    ) -> Flow:
        now = time.time()
        self._flows = {k: f for k, f in self._flows.items() if f.expires_at + _KEEP_FINISHED_S > now}
        flow = Flow("conn_" + secrets.token_hex(12), state, url, principal.name, name, owner, expires_at)
        self._flows[flow.id] = flow
        return flow

    # -- the browser's side ------------------------------------------------------------------

    async def open_link(self, request: Request) -> Response:
        """First visit: set the binding cookie and go to the provider. Any later visit is refused."""
        flow = self._flows.get(request.path_params["id"])
        if flow is None or flow.expires_at <= time.time():
            return page("Link expired", "This authorization link is unknown or expired; start the connection again.")
        if flow.binding is not None:
            return page("Link already used", "This authorization link was already opened; start a new connection.")
        nonce = secrets.token_urlsafe(32)
        flow.binding, flow.status = _digest(nonce), "opened"
        flow.message = "waiting for the provider to send the browser back"
        response = RedirectResponse(flow.provider_url, status_code=302, headers=_NO_STORE)
        response.set_cookie(
            _cookie_name(flow), nonce, max_age=max(1, int(flow.expires_at - time.time())), path=CALLBACK_PATH,
            secure=public_base(self.rt, request).startswith("https://"), httponly=True, samesite="lax",
        )  # fmt: skip
        return response

    async def callback(self, request: Request) -> Response:
        """RFC 6749 §4.1.2: check state and browser, exchange the code, store the tokens."""
        state = request.query_params.get("state", "")
        flow = next((f for f in self._flows.values() if f.state == state), None) if state else None
        cookie = request.cookies.get(_cookie_name(flow)) if flow else None
        same_browser = flow is not None and flow.binding is not None and cookie is not None
        if same_browser and flow is not None and flow.binding != _digest(cookie or ""):
            same_browser = False
        other_browser = flow is not None and flow.finished_at is None and not same_browser
        try:
            info = await self.vault.tokens.finish_connect(
                state,
                code=request.query_params.get("code") if same_browser else None,
                error=request.query_params.get("error"),
                started_by=flow.principal if same_browser and flow else "\x00another browser",
            )
        except vault_errors.AuthorizationStateError as exc:
            reason = str(exc)
            if other_browser:
                reason = "this authorization was finished in another browser than the one that opened the link"
            return self._failed(flow, "Not connected", reason, 400)
        except vault_errors.TokenError as exc:
            # the provider said no (at the authorization endpoint, or invalid_grant for the code), or it failed
            refused = request.query_params.get("error") is not None or isinstance(exc, vault_errors.NeedsReauth)
            return self._failed(flow, "Not connected", str(exc), 400 if refused else 502)
        except vault_errors.VaultError as exc:
            return self._failed(flow, "Not connected", str(exc), 400)
        if flow is not None:
            flow.status, flow.finished_at = "connected", time.time()
            flow.message = f"connected {info.name} ({info.owner or SHARED})"
        log.info("oauth connection finished: credential %s (%s) connected", info.name, info.owner or SHARED)
        text = f"Keyhand now holds the credential {info.name!r} for {info.owner or SHARED}. You can close this window."
        response = page("Connected", text, 200)
        if flow is not None:
            response.delete_cookie(_cookie_name(flow), path=CALLBACK_PATH)
        return response

    def _failed(self, flow: Flow | None, title: str, reason: str, status: int) -> Response:
        if flow is not None and flow.finished_at is None:  # a replay does not undo a finished flow
            flow.status, flow.message, flow.finished_at = "failed", reason, time.time()
        log.info("oauth connection refused: %s", reason)
        return page(title, reason, status)

    async def client_metadata(self, request: Request) -> Response:
        """The client ID metadata document (draft-ietf-oauth-client-id-metadata-document §4)."""
        url = client_metadata_url(self.rt)
        if url is None:
            raise NotFound("no client_metadata_url: set oauth.client_metadata_url or an https server.public_url")
        base = public_base(self.rt, request)
        return JSONResponse({
            "client_id": url,
            "client_name": self.rt.config.oauth.client_name,
            "redirect_uris": [base + CALLBACK_PATH],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        })  # fmt: skip


_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def page(title: str, detail: str, status: int = 400) -> HTMLResponse:
    """A short, self-contained answer for a person's browser; everything dynamic is escaped."""
    t, d = html.escape(title), html.escape(detail)
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Keyhand: {t}</title></head>'
        f"<body><h1>{t}</h1><p>{d}</p></body></html>"
    )
    headers = {**_NO_STORE, "Content-Security-Policy": "default-src 'none'", "X-Frame-Options": "DENY"}
    return HTMLResponse(body, status_code=status, headers=headers)


def _cookie_name(flow: Flow | None) -> str:
    return f"keyhand_oauth_{flow.id if flow else 'none'}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _mcp_provider_name(name: str, owner: str | None) -> str:
    """One provider per connected MCP credential: its own client registration and endpoints."""
    candidate = f"mcp:{owner or SHARED}:{name}"
    if len(candidate) <= 128:
        return candidate
    return "mcp:" + hashlib.sha256(candidate.encode()).hexdigest()[:32]


def _read_secret_reference(reference: str) -> Secret:
    """``env:VAR`` or ``file:PATH`` -> the secret. Raises ConfigError naming the reference, never the value."""
    kind, _, where = reference.partition(":")
    if kind == "env":
        value = os.environ.get(where)
        if not value:
            raise ConfigError(f"client secret reference {reference!r}: the variable is unset or empty")
        return Secret(value.strip())
    path = Path(where).expanduser()
    try:
        return Secret(path.read_text().strip())
    except OSError as exc:
        raise ConfigError(f"client secret reference {reference!r}: cannot read it ({exc.strerror})") from None
