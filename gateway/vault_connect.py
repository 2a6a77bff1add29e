"""``keyhand vault connect PROVIDER|URL``: connect an OAuth credential through the running gateway.

The CLI never sees a token. It asks the gateway's admin API to start a
connection (``POST /v1/admin/connections``, with the admin key from
``$KEYHAND_HOME/admin.key``), prints the authorization link for a person to
open, and polls ``GET /v1/admin/connections/{id}`` until the gateway's
``/oauth/callback`` has stored the credential or refused it.

``--follow`` is the non-interactive mode (tests, the MCP conformance suite): the
CLI opens the link itself with an HTTP client that keeps cookies and follows
redirects, as a browser would, so a provider that approves at once sends it
straight back to the callback. A pre-registered client's secret is read from
standard input (``--client-secret-stdin``), never from an argument.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

from gateway.config import Config
from gateway.errors import ConfigError
from vault.models import SHARED

POLL_S = 0.5


def add_parser(vault: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connect = vault.add_parser("connect", help="connect an OAuth provider or an MCP server (needs the gateway running)")
    connect.add_argument("target", help="a provider name, or the https URL of an MCP server")
    connect.add_argument("--owner", default=SHARED, help="principal (API key name) or 'shared' (default)")
    connect.add_argument("--name", help="credential name (default: the provider name, or the server's host)")
    connect.add_argument("--scopes", help="space-separated scopes (default: the provider's, or what the server asks)")
    connect.add_argument("--url", help="the gateway's base URL (default: server.public_url, else host:port)")
    connect.add_argument("--follow", action="store_true", help="open the link here instead of in a browser")
    connect.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the callback")
    connect.add_argument("--client-id", help="MCP server: a client pre-registered at its authorization server")
    connect.add_argument("--client-secret-stdin", action="store_true", help="read that client's secret from stdin")


def gateway_url(args: argparse.Namespace, config: Config) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if config.server.public_url:
        return config.server.public_url.rstrip("/").removesuffix("/mcp")
    host = config.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    return f"http://{host}:{config.server.port}"


def run(args: argparse.Namespace, config: Config, home: Path) -> int:
    key_path = home / "admin.key"
    try:
        admin_key = key_path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the admin key {key_path} ({exc.strerror}); is KEYHAND_HOME right?") from None
    base = gateway_url(args, config)
    body = connection_request(args)
    with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30) as api:
        started = _call(api, "POST", "/v1/admin/connections", json=body)
        print(started["authorization_url"], flush=True)
        if args.follow:
            follow(started["authorization_url"])
        else:
            print("keyhand: open this link in a browser to connect; waiting...", file=sys.stderr)
        final = wait(api, started["status_url"], args.timeout)
    if final["status"] != "connected":
        print(f"keyhand: not connected: {final['message']}", file=sys.stderr)
        return 1
    print(f"keyhand: {final['message']}", file=sys.stderr)
    return 0


def connection_request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"owner": args.owner}
    is_url = str(args.target).startswith(("http://", "https://"))
    body["mcp_server_url" if is_url else "provider"] = args.target
    if args.name:
        body["name"] = args.name
    if args.scopes is not None:
        body["scopes"] = args.scopes.split()
    if args.client_id:
        body["client_id"] = args.client_id
    if args.client_secret_stdin:
        secret = sys.stdin.read().strip()
        if not secret:
            raise ConfigError("--client-secret-stdin: standard input was empty")
        body["client_secret"] = secret
    return body


def follow(link: str) -> None:
    """Open the link as a browser would: keep cookies, follow every redirect to the callback page."""
    with httpx2.Client(follow_redirects=True, timeout=30, max_redirects=10) as browser:
        try:
            page = browser.get(link)
        except httpx2.HTTPError as exc:
            raise ConfigError(f"following the authorization link failed ({type(exc).__name__})") from None
    print(f"keyhand: the callback page answered HTTP {page.status_code}", file=sys.stderr)


def wait(api: httpx2.Client, status_url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = _call(api, "GET", status_url)
        if status["status"] in ("connected", "failed") or time.monotonic() > deadline:
            if status["status"] not in ("connected", "failed"):
                status["message"] = f"no callback within {timeout:.0f} s ({status['message']})"
            return status
        time.sleep(POLL_S)


def _call(api: httpx2.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = api.request(method, path, **kwargs)
    except httpx2.HTTPError as exc:
        raise ConfigError(
            f"cannot reach the gateway at {api.base_url} ({type(exc).__name__}); is it running?"
        ) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code >= 400:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise ConfigError(f"the gateway refused: {error.get('message') or f'HTTP {response.status_code}'}")
    if not isinstance(answer, dict):
        raise ConfigError("the gateway sent an answer that is not a JSON object")
    return answer
