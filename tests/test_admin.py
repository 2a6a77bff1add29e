"""The admin API under /v1/admin against a real `keyhand serve`: who may call it, and what comes back."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Gateway
from tests.vault_fixtures import MOCK_CLIENT_SECRET, OAuthServer, provider_body

pytestmark = pytest.mark.anyio

ROUTES = [
    ("GET", "/v1/admin/providers"),
    ("POST", "/v1/admin/providers"),
    ("PATCH", "/v1/admin/providers/x"),
    ("PUT", "/v1/admin/providers/x"),
    ("DELETE", "/v1/admin/providers/x"),
    ("GET", "/v1/admin/credentials"),
    ("POST", "/v1/admin/credentials"),
    ("DELETE", "/v1/admin/credentials/shared/x"),
    ("POST", "/v1/admin/credentials/shared/x/refresh"),
    ("POST", "/v1/admin/connections"),
    ("GET", "/v1/admin/connections/conn_x"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys"),
    ("DELETE", "/v1/admin/keys/x"),
    ("GET", "/v1/admin/sessions"),
]
FAKE_SERVER = OAuthServer("http://127.0.0.1:9")  # CRUD never calls the provider


@pytest.fixture(scope="module")
def user_key(gateway: Gateway) -> str:
    return gateway.create_key("plain-user")


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_admin_route_refuses_a_missing_key_with_401_and_a_user_key_with_403(
    gateway: Gateway, user_key: str, method: str, path: str
) -> None:
    user = user_key
    async with gateway.http(None) as anonymous, gateway.http(user) as http:
        missing = await anonymous.request(method, path, json={})
        refused = await http.request(method, path, json={})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


async def test_providers_are_created_listed_updated_and_deleted_and_the_client_secret_never_comes_back(
    gateway: Gateway,
) -> None:
    async with gateway.http() as http:
        created = await http.post("/v1/admin/providers", json=provider_body(FAKE_SERVER, "crud"))
        duplicate = await http.post("/v1/admin/providers", json=provider_body(FAKE_SERVER, "crud"))
        patched = await http.patch("/v1/admin/providers/crud", json={"default_scopes": ["a", "b"]})
        replaced = await http.put(
            "/v1/admin/providers/crud", json=provider_body(FAKE_SERVER, token_endpoint_auth_method="client_secret_post")
        )
        listed = await http.get("/v1/admin/providers")
        bad = await http.post("/v1/admin/providers", json={"name": "nope"})
        deleted = await http.delete("/v1/admin/providers/crud")
        gone = await http.get("/v1/admin/providers/crud")
    assert created.status_code == 201 and created.json()["has_client_secret"] is True
    assert duplicate.status_code == 409
    assert patched.json()["default_scopes"] == ["a", "b"] and patched.json()["has_client_secret"] is True
    assert replaced.json()["token_endpoint_auth_method"] == "client_secret_post"
    assert "crud" in [p["name"] for p in listed.json()["providers"]]
    assert bad.status_code == 400 and "authorization_url" in bad.json()["error"]["message"]
    assert deleted.status_code == 200 and gone.status_code == 404
    for response in (created, duplicate, patched, replaced, listed, bad, deleted, gone):
        assert MOCK_CLIENT_SECRET not in response.text


async def test_credentials_of_every_static_kind_are_stored_listed_without_secrets_and_deleted(
    gateway: Gateway,
) -> None:
    secrets = {"bearer": "adm-bearer-5f0e1d2c", "api_key": "adm-apikey-9a8b7c6d", "basic": "adm-basic-pw-3e4f5a6b"}
    bodies = [
        {"name": "crud-bearer", "kind": "bearer", "owner": "alice", "secret": secrets["bearer"]},
        {"name": "crud-key", "kind": "api_key", "header": "X-Api-Token", "secret": secrets["api_key"]},
        {"name": "crud-basic", "kind": "basic", "username": "bob", "owner": "bob", "secret": secrets["basic"]},
    ]
    async with gateway.http() as http:
        created = [await http.post("/v1/admin/credentials", json=body) for body in bodies]
        oauth = await http.post("/v1/admin/credentials", json={"name": "x", "kind": "oauth2", "secret": "s"})
        empty = await http.post("/v1/admin/credentials", json={"name": "x", "kind": "bearer"})
        listed = await http.get("/v1/admin/credentials")
        deleted = await http.delete("/v1/admin/credentials/alice/crud-bearer")
        again = await http.delete("/v1/admin/credentials/alice/crud-bearer")
    assert [c.status_code for c in created] == [201, 201, 201]
    assert created[1].json() | {"owner": "shared", "header": "X-Api-Token", "kind": "api_key"} == created[1].json()
    assert oauth.status_code == 400 and empty.status_code == 400
    names = {(c["owner"], c["name"]) for c in listed.json()["credentials"]}
    assert {("alice", "crud-bearer"), ("shared", "crud-key"), ("bob", "crud-basic")} <= names
    assert deleted.json()["deleted"]["name"] == "crud-bearer" and again.status_code == 404
    everything = json.dumps([r.text for r in (*created, listed, deleted, again)])
    for secret in secrets.values():
        assert secret not in everything


async def test_admins_create_list_and_revoke_api_keys_and_see_every_session(gateway: Gateway) -> None:
    async with gateway.http() as http:
        created = await http.post("/v1/admin/keys", json={"name": "from-admin-api"})
        key = created.json()["key"]
        async with gateway.http(key) as as_new:
            session = (await as_new.post("/v1/sessions")).json()["id"]
            listed_keys = await http.get("/v1/admin/keys")
            sessions = await http.get("/v1/admin/sessions")
            revoked = await http.delete("/v1/admin/keys/from-admin-api")
    assert created.status_code == 201 and key.startswith("kh_")
    assert "from-admin-api" in [k["name"] for k in listed_keys.json()["keys"]] and key not in listed_keys.text
    assert session in [s["id"] for s in sessions.json()["sessions"]]
    assert revoked.json() == {"revoked": 1}
