"""``render: true``: load a page in a real headless Chromium, every request through the guard proxy.

What keeps the browser contained:

- **Network**: Chromium gets ``--proxy-server`` = a :mod:`tools.browse_proxy` on
  127.0.0.1 started for this one render, with ``--proxy-bypass-list=<-loopback>``
  (Chromium otherwise bypasses proxies for loopback), QUIC off, WebRTC limited to
  proxied TCP (no UDP leaks), and background networking, sync and component
  updates off. Every request the page makes — the document, subresources,
  ``fetch``/XHR from scripts, WebSockets — is checked by the same guard as
  ``web_fetch`` and connects to the address that was checked.
- **User**: when keyhand runs as root, Chromium is started through a small wrapper
  that drops to an unprivileged uid (``render.run_as_uid``, default 65534
  ``nobody``) with ``setpriv --reuid --regid --clear-groups --no-new-privs``, all
  capabilities removed. As that user Chromium's own sandbox (user namespaces plus
  seccomp-bpf) works, so ``--no-sandbox`` is *not* passed: the renderer is
  sandboxed and the browser process holds no root privilege. Not bubblewrap: the
  Chromium sandbox needs to create its own namespaces, which a bwrap sandbox
  without ``--unshare-user`` nesting support would forbid. If ``setpriv`` is
  missing, rendering as root is refused (:class:`RenderUnavailable`) rather than
  falling back to ``--no-sandbox`` as root.
- **State**: a fresh profile directory per render (on ``/dev/shm``, in memory,
  when it exists), deleted afterwards; downloads refused; service workers
  blocked; the browser's environment holds only ``HOME``, ``PATH`` and ``LANG``
  (none of the gateway's variables). ``file://`` is never reached: the guard
  refuses non-http(s) URLs before launch, Chromium refuses web pages navigating to
  ``file:``, and a final URL that is not http(s) is refused.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from tools.browse_http import Fetched
from tools.browse_proxy import guard_proxy
from tools.netguard import FetchFailed, FetchRefused, FetchTimeout, Guard, RenderSettings

NETWORK_IDLE_MS = 1_500


class RenderUnavailable(FetchFailed):
    """Chromium cannot be run safely here (missing binary, or root without a way to drop privileges)."""


@dataclass(slots=True)
class Rendered:
    """The rendered DOM as a fetched HTML page, and the page's requests the guard blocked."""

    page: Fetched
    blocked: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BrowserProfile:
    """How to start Chromium for one render: the executable, a private profile, a clean environment."""

    executable: str
    user_data_dir: Path
    env: dict[str, str | float | bool]


def chromium_args(proxy_port: int) -> list[str]:
    """Flags for a contained, quiet headless Chromium whose traffic all goes to the guard proxy."""
    return [
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--proxy-bypass-list=<-loopback>",
        "--disable-quic",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-breakpad",
        "--dns-prefetch-disable",
        "--disable-features=MediaRouter,OptimizationHints,Translate,AutofillServerCommunication,"
        "NetworkTimeServiceQuerying,CertificateTransparencyComponentUpdater,SafeBrowsing,InterestFeedContentSuggestions",
        "--disable-client-side-phishing-detection",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--metrics-recording-only",
        "--no-pings",
        "--safebrowsing-disable-auto-update",
    ]


def _wrapper(directory: Path, chromium: str, uid: int) -> str:
    """A launcher that drops from root to ``uid`` (no groups, no capabilities, no new privileges)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RenderUnavailable("rendering as root needs setpriv (util-linux) to run Chromium unprivileged")
    script = directory / "chromium-unprivileged"
    script.write_text(
        "#!/bin/sh\n"
        f"exec {setpriv} --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all --bounding-set=-all "
        f'--no-new-privs -- {chromium} "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


@contextlib.contextmanager
def browser_profile(settings: RenderSettings) -> Iterator[BrowserProfile]:
    """A throw-away profile, owned by the uid Chromium will run as; removed afterwards."""
    if not os.access(settings.chromium_path, os.X_OK):
        raise RenderUnavailable(f"Chromium is not installed at {settings.chromium_path} (apt-get install chromium)")
    base = Path(tempfile.mkdtemp(prefix="keyhand-render-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        profile = base / "profile"
        profile.mkdir()
        executable = settings.chromium_path
        if os.geteuid() == 0:
            executable = _wrapper(base, settings.chromium_path, settings.run_as_uid)
            os.chown(profile, settings.run_as_uid, settings.run_as_uid)
            base.chmod(0o755)
        env: dict[str, str | float | bool] = {"HOME": str(profile), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        yield BrowserProfile(executable, profile, env)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def render_page(guard: Guard, url: str) -> Rendered:
    """Load ``url`` in headless Chromium and return its DOM; every request is guarded.

    Raises :class:`~tools.netguard.FetchRefused` (the page itself was refused, or
    its final URL is not http/https), :class:`~tools.netguard.FetchTimeout`, or
    :class:`RenderUnavailable`.
    """
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    settings = guard.settings.render
    limits = {"max_requests": settings.max_requests, "max_bytes": settings.max_bytes}
    with browser_profile(settings) as profile:
        async with guard_proxy(guard, **limits) as proxy, async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile.user_data_dir,
                executable_path=profile.executable,
                headless=True,
                args=chromium_args(proxy.port),
                chromium_sandbox=True,
                env=profile.env,
                accept_downloads=False,
                service_workers="block",
                timeout=settings.timeout_s * 1000,
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                try:
                    response = await page.goto(url, wait_until="load", timeout=settings.timeout_s * 1000)
                    with contextlib.suppress(PlaywrightError):
                        await page.wait_for_load_state("networkidle", timeout=NETWORK_IDLE_MS)
                    html, final_url = await page.content(), page.url
                except PlaywrightError as exc:
                    _raise_for(url, exc, proxy.blocked)
            finally:
                await context.close()
    reason = _blocked_reason(final_url, proxy.blocked)
    if reason is not None:
        raise FetchRefused(final_url, reason)
    if not final_url.startswith(("http://", "https://")):
        raise FetchRefused(url, f"the page navigated to {final_url[:80]!r}, which is not an http(s) URL")
    status = response.status if response is not None else 200
    return Rendered(Fetched(final_url, status, "text/html", "utf-8", html.encode()), list(proxy.blocked))


def _blocked_reason(url: str, blocked: list[tuple[str, str]]) -> str | None:
    """The guard's reason if it blocked ``url`` (for https: the CONNECT to its host and port)."""
    split = urlsplit(url)
    port = split.port or (443 if split.scheme == "https" else 80)
    tunnel = f"{split.hostname}:{port}"
    for blocked_url, reason in blocked:
        if blocked_url.rstrip("/") == url.rstrip("/") or (split.scheme == "https" and blocked_url == tunnel):
            return reason
    return None


def _raise_for(url: str, exc: Exception, blocked: list[tuple[str, str]]) -> NoReturn:
    """Turn a failed navigation into the guard's refusal when the guard caused it."""
    main = _blocked_reason(url, blocked)
    if main is not None:
        raise FetchRefused(url, main) from None
    if "Timeout" in type(exc).__name__:
        raise FetchTimeout(url, "the page did not finish loading in time (render.timeout_s)") from None
    raise FetchFailed(f"Chromium could not load {url!r}: {str(exc).splitlines()[0]}") from None
