"""``keyhand vault list | add | revoke | rotate-key | connect``: the vault from the command line.

Secrets are read from standard input, never from an argument (which would land
in shell history and ``ps``). Nothing here ever prints a secret.

``list``, ``add``, ``revoke`` and ``rotate-key`` open the vault file directly
(whether or not a gateway runs). ``revoke`` deletes locally; to revoke at the
provider first (RFC 7009), use ``DELETE /v1/admin/credentials/{owner}/{name}``.
``connect`` needs the *running* gateway, because the flow's state lives in the
process that receives ``/oauth/callback``: it calls the admin API (see
``gateway/vault_connect.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import anyio

from gateway import vault_connect
from gateway.config import Config, home_dir
from gateway.errors import ConfigError
from gateway.runtime import db_path, open_database
from vault import errors as vault_errors
from vault.models import SHARED, CredentialInfo
from vault.secret import Secret
from vault.store import VaultStore


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vault = sub.add_parser("vault", help="credentials in the encrypted vault").add_subparsers(
        dest="action", required=True
    )
    vault.add_parser("list", help="list credentials (never their secrets)")
    add = vault.add_parser("add", help="add a credential; the secret is read from standard input")
    add.add_argument("name")
    add.add_argument("--kind", choices=["bearer", "api_key", "basic"], required=True)
    add.add_argument("--owner", default=SHARED, help="principal (API key name) or 'shared' (default)")
    add.add_argument("--header", default="X-API-Key", help="api_key: the header it goes in")
    add.add_argument("--username", help="basic: the user name")
    revoke = vault.add_parser("revoke", help="delete a credential")
    revoke.add_argument("name")
    revoke.add_argument("--owner", default=SHARED)
    vault.add_parser("rotate-key", help="re-seal everything under a new master key")
    vault_connect.add_parser(vault)


def cmd_vault(args: argparse.Namespace, config: Config) -> int:
    home = home_dir()
    if args.action == "connect":
        return vault_connect.run(args, config, home)

    open_database(home).close()  # the file exists, owner-only, before the vault opens it

    async def run() -> int:
        store = await VaultStore.open(db_path(home), settings=config.vault, home=home)
        try:
            return await ACTIONS[args.action](store, args)
        finally:
            await store.close()

    try:
        return anyio.run(run)
    except vault_errors.VaultError as exc:
        raise ConfigError(str(exc)) from None


def owner_of(args: argparse.Namespace) -> str | None:
    return None if args.owner == SHARED else str(args.owner)


def describe(info: CredentialInfo) -> str:
    expiry = datetime.fromtimestamp(info.expires_at, UTC).isoformat() if info.expires_at else "-"
    scopes = " ".join(info.scopes) or "-"
    return f"{info.name}\t{info.kind.value}\t{info.owner or SHARED}\t{info.status.value}\t{expiry}\t{scopes}"


async def do_list(store: VaultStore, args: argparse.Namespace) -> int:
    for info in await store.list_credentials():
        print(describe(info))
    return 0


async def do_add(store: VaultStore, args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        print("keyhand: type or paste the secret, then Ctrl-D", file=sys.stderr)
    secret = Secret(sys.stdin.read().strip())
    owner = owner_of(args)
    if args.kind == "bearer":
        info = await store.add_bearer(args.name, secret, owner=owner)
    elif args.kind == "api_key":
        info = await store.add_api_key(args.name, secret, header=args.header, owner=owner)
    else:
        if not args.username:
            raise ConfigError("--kind basic needs --username")
        info = await store.add_basic(args.name, args.username, secret, owner=owner)
    print(describe(info))
    return 0


async def do_revoke(store: VaultStore, args: argparse.Namespace) -> int:
    info = await store.delete_credential(args.name, owner=owner_of(args))
    print(f"deleted {info.name} ({info.owner or SHARED})", file=sys.stderr)
    return 0


async def do_rotate(store: VaultStore, args: argparse.Namespace) -> int:
    report = await store.rotate_key()
    print(f"re-sealed under a new master key: {report}", file=sys.stderr)
    return 0


ACTIONS: dict[str, Callable[[VaultStore, argparse.Namespace], Awaitable[int]]] = {
    "list": do_list,
    "add": do_add,
    "revoke": do_revoke,
    "rotate-key": do_rotate,
}
