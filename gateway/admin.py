"""The admin API under ``/v1/admin/`` (admin keys only: another key gets 403, no key 401).

    POST   /v1/admin/providers                         create an OAuth provider (with its client secret)
    GET    /v1/admin/providers[/{name}]                list / show (never the client secret)
    PATCH  /v1/admin/providers/{name}                  change some fields; PUT replaces them all
    DELETE /v1/admin/providers/{name}
    POST   /v1/admin/credentials                       {name, kind: bearer|api_key|basic, owner, secret, ...}
    GET    /v1/admin/credentials                       every credential, never a secret
    DELETE /v1/admin/credentials/{owner}/{name}        revoke at the provider (RFC 7009) if it can, then delete
    POST   /v1/admin/credentials/{owner}/{name}/refresh
    POST   /v1/admin/connections                       {provider | mcp_server_url, owner, name, scopes}
    GET    /v1/admin/connections/{id}                  pending | opened | connected | failed, and why
    POST   /v1/admin/keys, GET /v1/admin/keys, DELETE /v1/admin/keys/{id or name}
    GET    /v1/admin/sessions                          every principal's sessions

``owner`` is a principal name or ``shared``. Secrets go in and never come out:
responses carry names, kinds, owners, status, expiry and scopes only (the one
exception is ``POST /v1/admin/keys``, which shows the new API key once, as
``keyhand keys create`` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api import principal_of, read_json
from gateway.errors import BadRequest, Forbidden
from gateway.oauth import Connections, Flow, api_error_of, public_base
from gateway.runtime import Runtime
from vault import errors as vault_errors
from vault.models import SHARED, AuthMethod, CredentialInfo, ProviderConfig, ProviderInfo
from vault.secret import Secret
from vault.store import VaultStore

Handler = Callable[[Request], Awaitable[Response]]
PREFIX = "/v1/admin"


def admin_only(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        if not principal_of(request).admin:
            raise Forbidden("the admin API needs an admin key (keyhand keys create --admin)")
        try:
            return await handler(request)
        except vault_errors.VaultError as exc:
            raise api_error_of(exc) from None

    return guarded


class AdminApi:
    def __init__(self, runtime: Runtime, connections: Connections) -> None:
        self.rt = runtime
        self.connections = connections

    def routes(self) -> list[Route]:
        table: list[tuple[str, Handler, str]] = [
            ("/providers", self.create_provider, "POST"),
            ("/providers", self.list_providers, "GET"),
            ("/providers/{name}", self.get_provider, "GET"),
            ("/providers/{name}", self.patch_provider, "PATCH"),
            ("/providers/{name}", self.put_provider, "PUT"),
            ("/providers/{name}", self.delete_provider, "DELETE"),
            ("/credentials", self.create_credential, "POST"),
            ("/credentials", self.list_credentials, "GET"),
            ("/credentials/{owner}/{name}", self.delete_credential, "DELETE"),
            ("/credentials/{owner}/{name}/refresh", self.refresh_credential, "POST"),
            ("/connections", self.start_connection, "POST"),
            ("/connections/{id}", self.connection_status, "GET"),
            ("/keys", self.create_key, "POST"),
            ("/keys", self.list_keys, "GET"),
            ("/keys/{key}", self.revoke_key, "DELETE"),
            ("/sessions", self.list_sessions, "GET"),
        ]
        return [Route(PREFIX + path, admin_only(fn), methods=[method]) for path, fn, method in table]

    @property
    def vault(self) -> VaultStore:
        return self.connections.vault

    # -- providers -----------------------------------------------------------------------

    async def create_provider(self, request: Request) -> Response:
        body = await _object(request)
        config = provider_from(body, _text(body, "name"))
        info = await self.vault.providers.add(config, _secret(body, "client_secret"))
        return JSONResponse(provider_json(info), status_code=201)

    async def list_providers(self, request: Request) -> Response:
        return JSONResponse({"providers": [provider_json(p) for p in await self.vault.providers.list()]})

    async def get_provider(self, request: Request) -> Response:
        return JSONResponse(provider_json(await self.vault.providers.get(request.path_params["name"])))

    async def patch_provider(self, request: Request) -> Response:
        current = (await self.vault.providers.get(request.path_params["name"])).config
        body = await _object(request)
        merged = provider_json_fields(current) | body
        return await self._update(merged, _secret(body, "client_secret"))

    async def put_provider(self, request: Request) -> Response:
        await self.vault.providers.get(request.path_params["name"])
        body = await _object(request)
        return await self._update(body | {"name": request.path_params["name"]}, _secret(body, "client_secret"))

    async def _update(self, values: dict[str, Any], secret: Secret | None) -> Response:
        """Replace the provider's settings; without a new client secret the stored one is kept."""
        info = await self.vault.providers.update(provider_from(values, str(values["name"])), secret)
        return JSONResponse(provider_json(info))

    async def delete_provider(self, request: Request) -> Response:
        info = await self.vault.providers.delete(request.path_params["name"])
        return JSONResponse({"deleted": provider_json(info)})

    # -- credentials ---------------------------------------------------------------------

    async def create_credential(self, request: Request) -> Response:
        body = await _object(request)
        name, kind, owner = _text(body, "name"), _text(body, "kind"), _owner(body.get("owner", SHARED))
        secret = _secret(body, "secret")
        if secret is None:
            raise BadRequest("'secret' is required (a string); it is stored sealed and never shown again")
        if kind == "bearer":
            info = await self.vault.add_bearer(name, secret, owner=owner)
        elif kind == "api_key":
            header = body.get("header", "X-API-Key")
            info = await self.vault.add_api_key(name, secret, header=str(header), owner=owner)
        elif kind == "basic":
            info = await self.vault.add_basic(name, _text(body, "username"), secret, owner=owner)
        else:
            raise BadRequest("'kind' is one of bearer, api_key, basic (oauth2 credentials come from /connections)")
        return JSONResponse(credential_json(info), status_code=201)

    async def list_credentials(self, request: Request) -> Response:
        return JSONResponse({"credentials": [credential_json(i) for i in await self.vault.list_credentials()]})

    async def delete_credential(self, request: Request) -> Response:
        name, owner = request.path_params["name"], _owner(request.path_params["owner"])
        info = await self.vault.tokens.revoke(name, owner=owner)
        return JSONResponse({"deleted": credential_json(info)})

    async def refresh_credential(self, request: Request) -> Response:
        name, owner = request.path_params["name"], _owner(request.path_params["owner"])
        return JSONResponse(credential_json(await self.vault.tokens.refresh(name, owner=owner)))

    # -- connections ---------------------------------------------------------------------

    async def start_connection(self, request: Request) -> Response:
        body = await _object(request)
        principal, base = principal_of(request), public_base(self.rt, request)
        owner, scopes = _owner(body.get("owner", SHARED)), _scopes(body.get("scopes"))
        provider, server = body.get("provider"), body.get("mcp_server_url")
        if (provider is None) == (server is None):
            raise BadRequest("give exactly one of 'provider' (a provider name) or 'mcp_server_url'")
        if isinstance(provider, str) and provider:
            name = str(body.get("name") or provider)
            flow = await self.connections.start_provider(
                principal, base, provider=provider, name=name, owner=owner, scopes=scopes
            )
        elif isinstance(server, str) and server:
            name = str(body.get("name") or urlsplit(server).netloc)
            flow = await self.connections.start_mcp(
                principal, base, server_url=server, name=name, owner=owner, scopes=scopes,
                client_id=_optional_text(body, "client_id"), client_secret=_secret(body, "client_secret"),
            )  # fmt: skip
        else:
            raise BadRequest("'provider' and 'mcp_server_url' must be non-empty strings")
        return JSONResponse(connection_json(flow, base), status_code=201)

    async def connection_status(self, request: Request) -> Response:
        return JSONResponse(self.connections.status(request.path_params["id"]).to_json())

    # -- API keys and sessions -------------------------------------------------------------

    async def create_key(self, request: Request) -> Response:
        body = await _object(request)
        name, admin, profile = _text(body, "name"), bool(body.get("admin", False)), str(body.get("profile", "default"))
        key = await anyio.to_thread.run_sync(lambda: self.rt.keys.create_sync(name, admin=admin, profile=profile))
        return JSONResponse({"name": name, "admin": admin, "profile": profile, "key": key}, status_code=201)

    async def list_keys(self, request: Request) -> Response:
        keys = await anyio.to_thread.run_sync(self.rt.keys.list_sync)
        return JSONResponse({"keys": [dataclasses.asdict(k) for k in keys]})

    async def revoke_key(self, request: Request) -> Response:
        key = request.path_params["key"]
        count = await anyio.to_thread.run_sync(lambda: self.rt.keys.revoke_sync(key))
        return JSONResponse({"revoked": count})

    async def list_sessions(self, request: Request) -> Response:
        sessions = await self.rt.sessions.list(principal_of(request), limit=1000)
        return JSONResponse({"sessions": [s.to_json() for s in sessions]})


def provider_from(body: dict[str, Any], name: str) -> ProviderConfig:
    """A provider config from a request body. Raises BadRequest naming the field."""
    method = body.get("token_endpoint_auth_method", AuthMethod.CLIENT_SECRET_BASIC.value)
    if method not in AuthMethod._value2member_map_:
        raise BadRequest("'token_endpoint_auth_method' is client_secret_basic, client_secret_post or none")
    return ProviderConfig(
        name=name,
        authorization_url=_text(body, "authorization_url"),
        token_url=_text(body, "token_url"),
        client_id=_text(body, "client_id"),
        revocation_url=_optional_text(body, "revocation_url"),
        default_scopes=_scopes(body.get("default_scopes")) or (),
        token_endpoint_auth_method=AuthMethod(method),
    )


def provider_json_fields(c: ProviderConfig) -> dict[str, Any]:
    return {
        "name": c.name,
        "authorization_url": c.authorization_url,
        "token_url": c.token_url,
        "revocation_url": c.revocation_url,
        "client_id": c.client_id,
        "default_scopes": list(c.default_scopes),
        "token_endpoint_auth_method": c.token_endpoint_auth_method.value,
    }


def provider_json(info: ProviderInfo) -> dict[str, Any]:
    extra = {"has_client_secret": info.has_client_secret, "created_at": info.created_at}
    return provider_json_fields(info.config) | extra | {"updated_at": info.updated_at}


def credential_json(info: CredentialInfo) -> dict[str, Any]:
    values = dataclasses.asdict(info)  # CredentialInfo has no secret field, by construction
    return values | {"kind": info.kind.value, "status": info.status.value, "owner": info.owner or SHARED}


def connection_json(flow: Flow, base: str) -> dict[str, Any]:
    return {
        "id": flow.id,
        "authorization_url": f"{base}/oauth/start/{flow.id}",
        "state": flow.state,
        "expires_at": flow.expires_at,
        "status_url": f"{PREFIX}/connections/{flow.id}",
    }


async def _object(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} is required and must be a non-empty string")
    return value


def _optional_text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string when given")
    return value


def _secret(body: dict[str, Any], key: str) -> Secret | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string when given")
    return Secret(value)


def _owner(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        raise BadRequest("'owner' is a principal name or 'shared'")
    return None if value == SHARED else value


def _scopes(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise BadRequest("'scopes' is a list of strings or one space-separated string")
