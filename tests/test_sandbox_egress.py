"""Sandbox egress: with ``allow_hosts``, code in a real bubblewrap sandbox reaches exactly those hosts, guarded.

The hosts are names the test resolver maps to the real servers of ``tests/web_servers.py`` on
127.0.0.1; the servers' ports are the narrow ``allow_private`` exceptions. The sink stands for
every private service: nothing may ever reach it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pydantic
import pytest

from tests.sandbox_helpers import RecordingContext, make_context, small_settings
from tests.web_servers import MapResolver, Server, serve, site_app
from tests.web_tls import LocalPKI, make_pki
from tools.netguard import HostRefused, ResolveFailed
from tools.sandbox.bwrap import SANDBOX_ENV, BwrapBackend, BwrapSandbox
from tools.sandbox.egress import PROXY_ENV, HostListGuard
from tools.sandbox.pool import SandboxPool
from tools.sandbox.settings import SandboxNetwork, SandboxSettings

pytestmark = pytest.mark.anyio

SITE = "egress.keyhand-tests.example"
TLS_SITE = "tls-egress.keyhand-tests.example"
UNLISTED = "unlisted.keyhand-tests.example"
METADATA_ALIAS = "metadata-alias.keyhand-tests.example"
PRIVATE_ALIAS = "private-alias.keyhand-tests.example"
LOOPBACK_ALIAS = "loopback-alias.keyhand-tests.example"
STATUS = "curl -s -o /dev/null -w '%{http_code} %{http_connect}\\n' --max-time 10"
VIA_PROXY = "-x http://127.0.0.1:3128 --noproxy ''"  # even for addresses NO_PROXY would send direct
BASH_VARIABLES = {"PWD", "OLDPWD", "SHLVL", "_"}


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, LocalPKI]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"), TLS_SITE)
    with serve(site_app, ssl_certfile=str(pki.cert_file), ssl_keyfile=str(pki.key_file)) as server:
        yield server, pki


@pytest.fixture
def resolver() -> MapResolver:
    loopback = ["127.0.0.1"]
    return MapResolver(
        {
            SITE: loopback,
            TLS_SITE: loopback,
            UNLISTED: loopback,
            LOOPBACK_ALIAS: loopback,
            METADATA_ALIAS: ["169.254.169.254"],
            PRIVATE_ALIAS: ["10.0.0.1"],
        }
    )


def egress_settings(site: Server, tls: Server) -> SandboxSettings:
    network = SandboxNetwork(
        allow_hosts=[SITE, TLS_SITE, METADATA_ALIAS, PRIVATE_ALIAS, LOOPBACK_ALIAS],
        allow_private=[site.exception, tls.exception],
    )
    return small_settings("bwrap").model_copy(update={"network": network})


@pytest.fixture
async def pool(
    tmp_path: Path, site: Server, tls_site: tuple[Server, LocalPKI], resolver: MapResolver
) -> AsyncIterator[SandboxPool]:
    settings = egress_settings(site, tls_site[0])
    pool = SandboxPool(settings, tmp_path / "workspaces", backend=BwrapBackend(settings, resolver=resolver))
    yield pool
    await pool.close()


@pytest.fixture
def ctx(tmp_path: Path) -> RecordingContext:
    return make_context(tmp_path, "egress")


async def run(pool: SandboxPool, ctx: RecordingContext, command: str, timeout_s: float = 20) -> str:
    result = await pool.exec(ctx, command, timeout_s=timeout_s)
    return result.stdout + result.stderr


def refused(ctx: RecordingContext) -> dict[str, tuple[str, int]]:
    return {d["host"]: (d["reason"], d["count"]) for t, d in ctx.events if t == "sandbox.egress_refused"}


async def test_curl_and_urllib_in_the_sandbox_fetch_an_allowed_host_through_the_proxy(
    pool: SandboxPool, ctx: RecordingContext, site: Server
) -> None:
    url = f"http://{SITE}:{site.port}/echo"
    by_curl = await run(pool, ctx, f"curl -sS --max-time 10 {url}")
    by_urllib = await run(pool, ctx, f"python3 -c \"import urllib.request as u; print(u.urlopen('{url}').read())\"")
    assert json.loads(by_curl) == {"host": f"{SITE}:{site.port}", "client": "127.0.0.1"}
    assert f'"host":"{SITE}:{site.port}"' in by_urllib
    assert refused(ctx) == {}


async def test_https_to_an_allowed_host_is_a_connect_tunnel_verified_end_to_end_for_the_name(
    pool: SandboxPool, ctx: RecordingContext, tls_site: tuple[Server, LocalPKI], resolver: MapResolver
) -> None:
    server, pki = tls_site
    (ctx.workspace / "ca.pem").write_bytes(pki.ca_pem)
    out = await run(pool, ctx, f"curl -sS --max-time 10 --cacert ca.pem https://{TLS_SITE}:{server.port}/echo")
    assert json.loads(out)["host"] == f"{TLS_SITE}:{server.port}"
    assert resolver.calls == [TLS_SITE]  # resolved once, on the host, by the guard


async def test_a_host_not_on_the_list_is_refused_unresolved_and_reported(
    pool: SandboxPool, ctx: RecordingContext, sink: Server, resolver: MapResolver
) -> None:
    out = await run(pool, ctx, f"{STATUS} http://{UNLISTED}:{sink.port}/; {STATUS} https://{UNLISTED}:{sink.port}/")
    assert out.split() == ["403", "000", "000", "403"]  # the plain request, then the CONNECT
    assert UNLISTED not in resolver.calls and sink.hits == []
    [(reason, count)] = refused(ctx).values()
    assert "allow_hosts" in reason and count == 2


async def test_listed_names_resolving_to_the_metadata_or_a_private_address_are_refused(
    pool: SandboxPool, ctx: RecordingContext, sink: Server
) -> None:
    urls = [f"http://{METADATA_ALIAS}/latest/meta-data/", f"http://{PRIVATE_ALIAS}/", f"https://{PRIVATE_ALIAS}/"]
    urls.append(f"http://{LOOPBACK_ALIAS}:{sink.port}/")  # loopback, but not the excepted port
    out = await run(pool, ctx, "; ".join(f"{STATUS} {url}" for url in urls))
    assert out.split() == ["403", "000", "403", "000", "000", "403", "403", "000"]
    reasons = refused(ctx)
    assert set(reasons) == {METADATA_ALIAS, PRIVATE_ALIAS, LOOPBACK_ALIAS}
    assert "metadata" in reasons[METADATA_ALIAS][0] and sink.hits == []


async def test_addresses_are_refused_through_the_proxy_even_the_excepted_test_server(
    pool: SandboxPool, ctx: RecordingContext, site: Server, sink: Server
) -> None:
    hits = list(site.hits)
    urls = ["http://169.254.169.254/latest/meta-data/", f"http://127.0.0.1:{sink.port}/", site.base + "/echo"]
    out = await run(pool, ctx, "; ".join(f"{STATUS} {VIA_PROXY} {url}" for url in urls))
    assert out.split() == ["403", "000"] * 3
    assert sink.hits == [] and site.hits == hits
    assert set(refused(ctx)) == {"169.254.169.254", "127.0.0.1"}


DIRECT = """
import socket
for addr in [("127.0.0.1", {port}), ("1.1.1.1", 80), ("169.254.169.254", 80)]:
    try:
        socket.create_connection(addr, timeout=3); print("connected", addr)
    except OSError as e:
        print("failed")
try:
    socket.getaddrinfo("{site}", {port}); print("resolved")
except OSError:
    print("failed")
"""


async def test_a_connection_that_bypasses_the_proxy_fails(
    pool: SandboxPool, ctx: RecordingContext, site: Server
) -> None:
    hits = list(site.hits)
    (ctx.workspace / "direct.py").write_text(DIRECT.format(port=site.port, site=SITE))
    out = await run(pool, ctx, "python3 direct.py")
    curl = await pool.exec(ctx, f"curl -sS --max-time 10 --noproxy '*' http://{SITE}:{site.port}/echo", timeout_s=20)
    assert out.split() == ["failed"] * 4
    assert curl.exit_code == 6 and site.hits == hits  # 6: could not resolve; the sandbox has no DNS


async def test_the_sandbox_environment_gains_only_the_proxy_variables(
    pool: SandboxPool, ctx: RecordingContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYHAND_TEST_TOKEN", "tok-should-not-leak")
    names = {line.split("=", 1)[0] for line in (await run(pool, ctx, "env")).splitlines()}
    listing = (await run(pool, ctx, "ls -A /run/keyhand")).split()
    assert names - BASH_VARIABLES == set(SANDBOX_ENV) | set(PROXY_ENV)
    assert listing == ["egress.sock", "forwarder.py", "supervisor.py"]


async def test_without_allowed_hosts_there_is_no_socket_no_forwarder_and_no_proxy_variable(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "offline")
    pool = SandboxPool(small_settings("bwrap"), tmp_path / "workspaces")
    try:
        env = await run(pool, ctx, "env")
        listing = await run(pool, ctx, "ls -A /run/keyhand")
        port = await pool.exec(ctx, "curl -s --max-time 5 -x http://127.0.0.1:3128 http://example.com/", timeout_s=20)
        sandbox = pool.get_existing(ctx.session_id)
    finally:
        await pool.close()
    assert "proxy" not in env.lower() and listing.split() == ["supervisor.py"]
    assert port.exit_code == 7  # curl: failed to connect, nothing listens on the proxy port
    assert isinstance(sandbox, BwrapSandbox) and sandbox.egress is None


async def test_the_forwarder_comes_back_after_a_command_or_a_timeout_kills_it(
    pool: SandboxPool, ctx: RecordingContext, site: Server
) -> None:
    fetch = f"curl -sS --max-time 10 http://{SITE}:{site.port}/echo"
    forwarder = "'forwarder.py [0-9]'"  # its command line: forwarder.py LISTEN_FD SOCKET (not the supervisor's)
    killed = await run(pool, ctx, f"pkill -9 -f {forwarder} && ! pgrep -f {forwarder} && echo gone")
    after_kill = await run(pool, ctx, fetch)
    timed_out = await pool.exec(ctx, "while :; do :; done", timeout_s=1)
    after_timeout = await run(pool, ctx, fetch)
    assert killed == "gone\n" and timed_out.timed_out
    assert json.loads(after_kill)["host"] == json.loads(after_timeout)["host"] == f"{SITE}:{site.port}"


async def test_the_proxy_and_its_socket_go_when_the_sandbox_stops(pool: SandboxPool, ctx: RecordingContext) -> None:
    await run(pool, ctx, "true")
    sandbox = pool.get_existing(ctx.session_id)
    assert isinstance(sandbox, BwrapSandbox) and sandbox.egress is not None
    socket_path = sandbox.egress.socket_path
    assert socket_path.is_socket()
    await pool.stop(ctx.session_id)
    assert not socket_path.parent.exists()


async def test_a_wildcard_entry_allows_subdomains_but_not_the_domain_itself() -> None:
    guard = HostListGuard(SandboxNetwork(allow_hosts=["*.keyhand-tests.example"]), MapResolver({}))
    with pytest.raises(HostRefused):
        await guard.check("https://keyhand-tests.example/")
    with pytest.raises(HostRefused):
        await guard.check("https://keyhand-tests.example.evil.example/")
    with pytest.raises(ResolveFailed):  # listed: it gets as far as resolving
        await guard.check(f"https://{SITE}/")


@pytest.mark.parametrize(
    "network",
    [
        {"allow_hosts": ["10.0.0.1"]},
        {"allow_hosts": ["localhost"]},
        {"allow_hosts": ["http://example.com"]},
        {"allow_private": ["169.254.169.254:80"]},
        {"allow_private": ["127.0.0.1"]},
    ],
)
def test_hosts_must_be_names_and_exceptions_narrow_and_never_metadata(network: dict[str, list[str]]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SandboxNetwork.model_validate(network)
