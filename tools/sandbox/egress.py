"""Sandbox egress: the guard proxy a sandbox with ``network.allow_hosts`` reaches its hosts through.

The sandbox keeps its own network namespace with nothing but loopback. When the
profile lists hosts, each sandbox gets one :class:`Egress`: the network guard of
``web_fetch`` (:mod:`tools.netguard`), narrowed to exactly those names, behind the
guard proxy of :mod:`tools.browse_proxy`, listening on a Unix socket in a private
host directory. The socket is bound into the sandbox at :data:`EGRESS_SOCKET`; the
supervisor runs :mod:`tools.sandbox.forwarder`, which relays the sandbox's
``127.0.0.1:`` :data:`PROXY_PORT` to it, and the shell gets :data:`PROXY_ENV`.

So HTTPS goes through ``CONNECT`` (the guard checks the name, the tunnel goes to
the checked address, TLS stays end to end) and plain HTTP is forwarded; loopback,
private and metadata addresses stay refused unless ``network.allow_private``
excepts an ``ip:port`` (never a metadata address). A name that is not listed is
refused before any DNS lookup, so not even its resolution leaves the host.

The proxy is served by an event loop of its own (a thread, through an anyio
blocking portal) because a sandbox outlives the task that provisioned it. Every
refused connection is kept until :meth:`Egress.take_refusals` collects it (the
pool emits them as ``sandbox.egress_refused``).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import start_blocking_portal

from tools.browse_proxy import GuardProxy
from tools.netguard import FetchRefused, FetchSettings, Guard, HostRefused, Resolver, Target, parse_host
from tools.sandbox.protocol import EgressRefusal
from tools.sandbox.settings import SandboxNetwork

EGRESS_SOCKET = "/run/keyhand/egress.sock"
FORWARDER_PATH = "/run/keyhand/forwarder.py"
PROXY_PORT = 3128
_PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
# Everything that honours the usual variables goes through the proxy; the sandbox's own loopback stays its own.
PROXY_ENV = {
    **{name: _PROXY_URL for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
    **{name: "localhost,127.0.0.1,::1" for name in ("NO_PROXY", "no_proxy")},
}
# A sandbox lives for hours: the proxy's per-render caps do not apply (limits are the sandbox's own).
UNCAPPED = sys.maxsize


def forwarder_source() -> bytes:
    return resources.files("tools.sandbox").joinpath("forwarder.py").read_bytes()


def host_listed(host: str, allow_hosts: list[str]) -> bool:
    """``host`` is one of ``allow_hosts`` exactly, or a subdomain of a ``*.domain`` entry."""
    for entry in allow_hosts:
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


class HostListGuard(Guard):
    """The network guard, allowing only the names of ``sandbox.network.allow_hosts``."""

    def __init__(self, network: SandboxNetwork, resolver: Resolver | None = None) -> None:
        domains = [host.removeprefix("*.") for host in network.allow_hosts]
        super().__init__(FetchSettings(allow_domains=domains, allow_private=network.allow_private), resolver)
        self.allow_hosts = network.allow_hosts

    async def check(self, url: str) -> Target:
        """Refuse an unlisted name before anything is resolved, then check everything else as web_fetch does."""
        host = _name_of(url)
        if host is not None and not host_listed(host, self.allow_hosts):
            raise HostRefused(url, f"{host!r} is not in sandbox.network.allow_hosts")
        return await super().check(url)


def _name_of(url: str) -> str | None:
    """The normalised host name of ``url``; None for an address or a malformed URL (the guard refuses those)."""
    try:
        host = parse_host(url, urlsplit(url).hostname or "")
    except (ValueError, FetchRefused):
        return None
    return host if isinstance(host, str) else None


def _host_of(request: str) -> str:
    """The host a refused request was for: ``host:port`` of a CONNECT, or the host of an absolute URL."""
    try:
        host = urlsplit(request if "://" in request else f"//{request}").hostname
    except ValueError:
        host = None
    return host or request[:200]


async def _serve(guard: Guard, path: str, *, task_status: TaskStatus[GuardProxy]) -> None:
    proxy = GuardProxy(guard, max_requests=UNCAPPED, max_bytes=UNCAPPED, ignored_hosts=frozenset())
    listener = await anyio.create_unix_listener(path, mode=0o600)
    async with listener:
        task_status.started(proxy)
        await listener.serve(proxy.handle)


class Egress:
    """One sandbox's guard proxy on a Unix socket; :meth:`open` it, :meth:`close` it (idempotent)."""

    def __init__(self, network: SandboxNetwork, resolver: Resolver | None = None) -> None:
        self.guard = HostListGuard(network, resolver)
        self.directory = Path(tempfile.mkdtemp(prefix="keyhand-egress-"))
        self.socket_path = self.directory / "egress.sock"
        self._stack = contextlib.ExitStack()
        self._task: Future[None] | None = None
        self._proxy: GuardProxy | None = None

    @classmethod
    async def open(cls, network: SandboxNetwork, resolver: Resolver | None = None) -> Egress:
        """Start serving; the socket exists when this returns."""
        egress = cls(network, resolver)
        try:
            await anyio.to_thread.run_sync(egress._start)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await egress.close()
            raise
        return egress

    def _start(self) -> None:
        portal = self._stack.enter_context(start_blocking_portal())
        self._task, self._proxy = portal.start_task(_serve, self.guard, str(self.socket_path))

    async def close(self) -> None:
        """Stop the proxy (its open tunnels end too) and remove its directory."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._stack.close)
        shutil.rmtree(self.directory, ignore_errors=True)

    def take_refusals(self) -> list[EgressRefusal]:
        """The connections refused since the last call (the proxy thread appends, this pops: no lock needed)."""
        blocked = self._proxy.blocked if self._proxy is not None else []
        taken: list[EgressRefusal] = []
        while blocked:
            request, reason = blocked.pop(0)
            taken.append(EgressRefusal(_host_of(request), reason))
        return taken
