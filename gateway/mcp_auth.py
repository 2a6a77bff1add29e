"""The MCP-authorization client: from an MCP server's URL to an OAuth provider the vault can use.

Follows the MCP specification's authorization section (2025-11-25), in order:

1. **Probe** the server with an unauthenticated ``initialize``; a 401 carries a
   ``WWW-Authenticate: Bearer`` challenge (RFC 6750 §3) whose ``resource_metadata``
   (RFC 9728 §5.1) and ``scope`` parameters we use.
2. **Protected resource metadata** (RFC 9728 §3): the challenge's URL, else the
   well-known URI with the server's path inserted
   (``/.well-known/oauth-protected-resource/mcp``), else at the root. Its
   ``resource`` must be the server itself (same origin, a path prefix, §3.3).
   No metadata at all is the 2025-03-26 revision: the server's origin is the
   authorization server.
3. **Authorization server metadata**: RFC 8414 §3.1 then OpenID Connect
   Discovery, with path insertion for an issuer that has a path
   (``/.well-known/oauth-authorization-server/tenant``,
   ``/.well-known/openid-configuration/tenant``, ``/tenant/.well-known/openid-configuration``).
   Metadata that does not list ``S256`` in ``code_challenge_methods_supported``
   is refused (the spec's MUST). The 2025-03-26 fallback (no metadata anywhere)
   uses ``/authorize``, ``/token`` and ``/register`` at the origin.
4. **Client registration**, in the spec's order of preference: a pre-registered
   client; a client ID metadata document (when the server advertises
   ``client_id_metadata_document_supported`` and Keyhand has an https URL for
   its document); dynamic registration (RFC 7591 §3).

The result is a :class:`~vault.models.ProviderConfig` plus client secret, the
RFC 8707 ``resource`` and the scopes to ask for; ``gateway/oauth.py`` stores it
and runs the ordinary PKCE code flow. URLs come from an admin, who is trusted to
name the server; nothing here follows a redirect.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

from gateway.errors import BadRequest
from vault.models import AuthMethod, ProviderConfig
from vault.secret import Secret

PROTOCOL_VERSION = "2025-11-25"
TIMEOUT_S = 10.0
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')


class DiscoveryError(BadRequest):
    """The MCP server or its authorization server did not give us what the spec requires."""

    code = "discovery_failed"


@dataclass(frozen=True, slots=True)
class Discovery:
    """What discovery found: the resource to ask a token for, its scopes, the AS metadata."""

    server_url: str
    resource: str
    scopes: tuple[str, ...] | None
    metadata: dict[str, Any]
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class Registration:
    """The client the gateway is at that authorization server."""

    client_id: str
    client_secret: Secret | None
    auth_method: AuthMethod


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """How the gateway describes itself when it registers (RFC 7591 §2)."""

    redirect_uri: str
    client_name: str = "Keyhand"
    metadata_url: str | None = None
    """An https URL serving our client ID metadata document, if the operator has one."""


def canonical(url: str) -> str:
    """The canonical resource URI of RFC 8707 §2 / MCP: lowercase scheme and host, no fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DiscoveryError(f"{url!r} is not an http(s) URL of an MCP server")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


def parse_challenge(header: str) -> dict[str, str]:
    """The parameters of a ``Bearer`` challenge (RFC 6750 §3), unquoted; {} if there is none."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {
        k.lower(): v[1:-1].replace('\\"', '"') if v.startswith('"') else v for k, v in _CHALLENGE_PARAM.findall(rest)
    }


async def discover(server_url: str, http: httpx2.AsyncClient) -> Discovery:
    """Steps 1-3 above. Raises DiscoveryError with what was tried."""
    server = canonical(server_url)
    challenge = await probe(server, http)
    prm = await protected_resource_metadata(server, challenge.get("resource_metadata"), http)
    scopes = tuple(challenge["scope"].split()) if challenge.get("scope") else None
    if prm is None:
        origin = _origin(server)
        metadata = await authorization_server_metadata(origin, http, required=False)
        if metadata is None:
            metadata = {"authorization_endpoint": origin + "/authorize", "token_endpoint": origin + "/token"}
            metadata["registration_endpoint"] = origin + "/register"
        return Discovery(server, server, scopes, metadata, legacy=True)
    servers = prm.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise DiscoveryError(f"the protected resource metadata of {server} names no authorization_servers")
    metadata = await authorization_server_metadata(servers[0], http, required=True)
    assert metadata is not None
    _require_s256(servers[0], metadata)
    if scopes is None and isinstance(prm.get("scopes_supported"), list):
        scopes = tuple(str(s) for s in prm["scopes_supported"])
    return Discovery(server, canonical(str(prm.get("resource") or server)), scopes, metadata)


async def probe(server: str, http: httpx2.AsyncClient) -> dict[str, str]:
    """Send ``initialize`` without a token; the challenge parameters of a 401, else {}."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "keyhand"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": PROTOCOL_VERSION}
    try:
        response = await http.post(server, json=body, headers=headers)
    except httpx2.HTTPError as exc:
        raise DiscoveryError(f"cannot reach the MCP server {server} ({type(exc).__name__})") from None
    if response.status_code in (401, 403):
        return parse_challenge(response.headers.get("www-authenticate", ""))
    return {}


async def protected_resource_metadata(
    server: str, advertised: str | None, http: httpx2.AsyncClient
) -> dict[str, Any] | None:
    """RFC 9728 metadata from the challenge's URL or the well-known URIs; None if the server has none."""
    parts = urlsplit(server)
    path = parts.path.rstrip("/")
    candidates = [advertised] if advertised else []
    if path:
        candidates.append(_origin(server) + "/.well-known/oauth-protected-resource" + path)
    candidates.append(_origin(server) + "/.well-known/oauth-protected-resource")
    for url in candidates:
        found = await _get_json(url, http)
        if found is not None:
            _check_resource(server, found)
            return found
    return None


async def authorization_server_metadata(
    issuer: str, http: httpx2.AsyncClient, *, required: bool
) -> dict[str, Any] | None:
    """RFC 8414 §3.1 / OpenID Discovery §4 metadata of ``issuer``, tried in the MCP spec's order."""
    origin, path = _origin(issuer), urlsplit(issuer).path.rstrip("/")
    if path:
        candidates = [
            f"{origin}/.well-known/oauth-authorization-server{path}",
            f"{origin}/.well-known/openid-configuration{path}",
            f"{origin}{path}/.well-known/openid-configuration",
        ]
    else:
        candidates = [f"{origin}/.well-known/oauth-authorization-server", f"{origin}/.well-known/openid-configuration"]
    for url in candidates:
        found = await _get_json(url, http)
        if found is not None and isinstance(found.get("authorization_endpoint"), str):
            if not isinstance(found.get("token_endpoint"), str):
                raise DiscoveryError(f"the authorization server metadata at {url} has no token_endpoint")
            return found
    if required:
        raise DiscoveryError(f"no authorization server metadata for {issuer} (tried {', '.join(candidates)})")
    return None


async def register(
    found: Discovery,
    identity: ClientIdentity,
    http: httpx2.AsyncClient,
    *,
    client_id: str | None = None,
    client_secret: Secret | None = None,
) -> Registration:
    """Step 4: pre-registered, else client ID metadata document, else RFC 7591 registration."""
    supported = _auth_methods(found.metadata)
    if client_id:
        return Registration(client_id, client_secret, _pick_method(supported, has_secret=client_secret is not None))
    if found.metadata.get("client_id_metadata_document_supported") is True and identity.metadata_url:
        return Registration(identity.metadata_url, None, AuthMethod.NONE)
    endpoint = found.metadata.get("registration_endpoint")
    if not isinstance(endpoint, str):
        raise DiscoveryError(
            f"the authorization server of {found.server_url} does not offer dynamic client registration and "
            "Keyhand has no client there: register one yourself and pass its client_id (and secret)"
        )
    method = _pick_method(supported, has_secret=True)
    return await _register_dynamically(endpoint, identity, method, found.scopes, http)


async def _register_dynamically(
    endpoint: str,
    identity: ClientIdentity,
    method: AuthMethod,
    scopes: tuple[str, ...] | None,
    http: httpx2.AsyncClient,
) -> Registration:
    """RFC 7591 §3.1 request; §3.2.1 response (the server may change what we asked for)."""
    body: dict[str, Any] = {
        "client_name": identity.client_name,
        "redirect_uris": [identity.redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": method.value,
    }
    if scopes:
        body["scope"] = " ".join(scopes)
    try:
        response = await http.post(endpoint, json=body)
    except httpx2.HTTPError as exc:
        raise DiscoveryError(f"client registration at {endpoint} failed ({type(exc).__name__})") from None
    if response.status_code not in (200, 201):
        raise DiscoveryError(f"client registration at {endpoint} answered HTTP {response.status_code}")
    answer = _json_object(response)
    if answer is None or not isinstance(answer.get("client_id"), str) or not answer["client_id"]:
        raise DiscoveryError(f"client registration at {endpoint} returned no client_id")
    secret = answer.get("client_secret")
    granted = answer.get("token_endpoint_auth_method")
    if isinstance(granted, str) and granted in AuthMethod._value2member_map_:
        method = AuthMethod(granted)
    if not isinstance(secret, str) or not secret:
        method, secret = AuthMethod.NONE, None
    kept = Secret(secret) if secret and method is not AuthMethod.NONE else None
    return Registration(answer["client_id"], kept, method)


def provider_config(name: str, found: Discovery, registration: Registration) -> ProviderConfig:
    """The vault provider for this server: endpoints from the metadata, our client there."""
    revocation = found.metadata.get("revocation_endpoint")
    return ProviderConfig(
        name=name,
        authorization_url=str(found.metadata["authorization_endpoint"]),
        token_url=str(found.metadata["token_endpoint"]),
        client_id=registration.client_id,
        revocation_url=revocation if isinstance(revocation, str) else None,
        default_scopes=found.scopes or (),
        token_endpoint_auth_method=registration.auth_method,
    )


def _auth_methods(metadata: dict[str, Any]) -> list[str]:
    # RFC 8414 §2: if omitted, the default is client_secret_basic
    methods = metadata.get("token_endpoint_auth_methods_supported")
    return [str(m) for m in methods] if isinstance(methods, list) else [AuthMethod.CLIENT_SECRET_BASIC.value]


def _pick_method(supported: list[str], *, has_secret: bool) -> AuthMethod:
    """A confidential client where the server allows one (basic, then post), else a public one."""
    if has_secret:
        for method in (AuthMethod.CLIENT_SECRET_BASIC, AuthMethod.CLIENT_SECRET_POST):
            if method.value in supported:
                return method
    if AuthMethod.NONE.value in supported or not has_secret:
        return AuthMethod.NONE
    raise DiscoveryError(f"the authorization server supports none of our client authentication methods ({supported})")


def _require_s256(issuer: str, metadata: dict[str, Any]) -> None:
    methods = metadata.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise DiscoveryError(
            f"the authorization server {issuer} does not advertise PKCE S256 (code_challenge_methods_supported); "
            "the MCP specification forbids connecting to it"
        )


def _check_resource(server: str, prm: dict[str, Any]) -> None:
    resource = prm.get("resource")
    if resource is None:
        return
    wanted, have = urlsplit(server), urlsplit(canonical(str(resource)))
    same_origin = (wanted.scheme, wanted.netloc) == (have.scheme, have.netloc)
    if not same_origin or not (wanted.path.rstrip("/") + "/").startswith(have.path.rstrip("/") + "/"):
        raise DiscoveryError(f"the protected resource metadata names {resource!r}, which is not the server {server}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _get_json(url: str, http: httpx2.AsyncClient) -> dict[str, Any] | None:
    try:
        response = await http.get(url, headers={"Accept": "application/json", "MCP-Protocol-Version": PROTOCOL_VERSION})
    except httpx2.HTTPError:
        return None
    return _json_object(response) if response.status_code == 200 else None


def _json_object(response: httpx2.Response) -> dict[str, Any] | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
