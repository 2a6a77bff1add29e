"""``keyhand serve | stdio | keys | sessions | doctor``.

Commands that only read (``sessions list/show/tail/export/verify``, ``keys list``)
open the SQLite file directly, so they work whether or not a gateway is running
(WAL lets readers and the gateway's writer work side by side).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from gateway import __version__, agent_cli, vault_cli
from gateway.config import Config, home_dir, load
from gateway.db import connect
from gateway.errors import KeyhandError
from gateway.ledger import Event, Ledger, Slice
from gateway.redact import LOG_SCRUBBER
from gateway.runtime import Runtime, db_path, open_database
from vault.errors import VaultError

log = logging.getLogger("keyhand")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyhand", description="Keyhand MCP gateway")
    parser.add_argument("--version", action="version", version=f"keyhand {__version__}")
    parser.add_argument("--config", type=Path, help="YAML config file (see config.example.yaml)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway over HTTP")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--no-auth", action="store_true", help="single-user local mode (loopback only)")

    stdio = sub.add_parser("stdio", help="serve the same tools over stdio")
    stdio.add_argument("--session", help="attach to this session instead of creating one")

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key; prints it once on stdout")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true")
    create.add_argument("--profile", default="default", help="agent profile this key's sessions use")
    keys.add_parser("list", help="list keys (never the keys themselves)")
    revoke = keys.add_parser("revoke", help="revoke a key by id, or all active keys of a name")
    revoke.add_argument("key")

    sessions = sub.add_parser("sessions", help="sessions and their ledgers").add_subparsers(
        dest="action", required=True
    )
    sessions.add_parser("list", help="list sessions")
    for name, text in (
        ("show", "a session and its recent events"),
        ("tail", "follow a session's events live (Ctrl-C to stop)"),
        ("export", "all events as JSON lines"),
        ("verify", "check the hash chain; exit 1 naming the first bad event"),
    ):
        sessions.add_parser(name, help=text).add_argument("id")

    sub.add_parser("doctor", help="check that this machine can run the gateway")
    agent_cli.add_parser(sub)
    vault_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    LOG_SCRUBBER.install()
    try:
        config = load(args.config)
        return COMMANDS[args.command](args, config)
    except (KeyhandError, VaultError) as exc:  # both carry messages written for the user, never a secret
        print(f"keyhand: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from gateway.serve import serve

    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.no_auth and not is_loopback(config.server.host):
        print(
            f"keyhand: --no-auth is only allowed on a loopback address, not {config.server.host}",
            file=sys.stderr,
        )
        return 2
    return serve(config, home_dir(), auth_enabled=not args.no_auth)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_stdio(args: argparse.Namespace, config: Config) -> int:
    from gateway.serve import serve_stdio

    return serve_stdio(config, home_dir(), session=args.session)


def cmd_keys(args: argparse.Namespace, config: Config) -> int:
    rt = Runtime.open_stores(config, home_dir())
    try:
        if args.action == "create":
            print(rt.keys.create_sync(args.name, admin=args.admin, profile=args.profile))
        elif args.action == "list":
            for k in rt.keys.list_sync():
                state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
                role = "admin" if k.admin else "user"
                print(f"{k.id}\t{k.name}\t{k.prefix}…\t{role}\t{k.profile}\t{k.created_at}\t{state}")
        else:
            count = rt.keys.revoke_sync(args.key)
            print(f"revoked {count} key(s)", file=sys.stderr)
    finally:
        rt.db.close()
    return 0


def cmd_sessions(args: argparse.Namespace, config: Config) -> int:
    home = home_dir()
    open_database(home).close()  # creates the schema on a fresh home
    conn = connect(db_path(home))
    if args.action == "list":
        for row in conn.execute(
            "SELECT s.id, s.principal, s.status, s.created_at, (SELECT MAX(seq) FROM events e"
            " WHERE e.session_id = s.id) FROM sessions s ORDER BY s.created_at DESC"
        ):
            print(f"{row[0]}\t{row[1]}\t{row[2]}\t{row[3]}\t{row[4] or 0} events")
        return 0
    if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (args.id,)).fetchone() is None:
        print(f"keyhand: no session {args.id!r}", file=sys.stderr)
        return 1
    if args.action == "verify":
        count, bad, reason = Ledger.verify_sync(conn, args.id)
        if bad is not None:
            print(f"session {args.id}: chain broken at seq {bad}: {reason}")
            return 1
        print(f"session {args.id}: {count} events, chain ok")
        return 0
    if args.action == "show":
        print_events(reversed(Ledger.read_sync(conn, args.id, Slice(limit=20, order="desc"))))
        return 0
    after = print_all(conn, args.id, 0)
    while args.action == "tail":
        time.sleep(0.2)
        after = print_all(conn, args.id, after)
    return 0


def print_events(events: Iterable[Event]) -> None:
    for event in events:
        print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)


def print_all(conn: sqlite3.Connection, session_id: str, after: int) -> int:
    """Print every event after ``after``, a page at a time; return the last seq printed."""
    while True:
        events = Ledger.read_sync(conn, session_id, Slice(after=after, limit=1000))
        print_events(events)
        if not events:
            return after
        after = events[-1].seq


def cmd_doctor(args: argparse.Namespace, config: Config) -> int:
    from gateway.serve import doctor

    return doctor(config, home_dir())


COMMANDS = {
    "serve": cmd_serve,
    "stdio": cmd_stdio,
    "keys": cmd_keys,
    "sessions": cmd_sessions,
    "doctor": cmd_doctor,
    "agent": agent_cli.cmd_agent,
    "vault": vault_cli.cmd_vault,
}

if __name__ == "__main__":
    sys.exit(main())
