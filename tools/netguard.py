"""The network guard: decides whether keyhand may open a connection to a URL, and to which address.

One guard serves browsing (``web_fetch``, the Chromium proxy) and, later, sandbox
egress. A fetching gateway is a textbook server-side request forgery target: a
prompt-injected agent asks for ``http://169.254.169.254/`` or
``http://localhost:8765/v1/admin``. The guard therefore, in this order:

1. accepts only ``http``/``https`` URLs without userinfo (RFC 3986 §3.2.1: a
   password in a URL is deprecated, and ``a@b`` tricks hide the real host);
2. normalises the host the way a browser or libc would (WHATWG URL "IPv4 parser":
   ``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1`` are all 127.0.0.1) and
   refuses special-use names (RFC 6761 ``localhost``, ``.local``, metadata names);
3. applies the profile's domain allow/deny lists;
4. resolves *all* A/AAAA records through an injectable :class:`Resolver` and
   refuses when *any* is non-public (loopback, RFC 1918, link-local, CGNAT
   RFC 6598, unique-local RFC 4193, multicast, reserved, unspecified, and the
   IPv4-mapped, NAT64 RFC 6052, 6to4 and Teredo forms of those);
5. returns a :class:`Target` holding the checked addresses. Callers connect to
   those addresses only (pinning): a second DNS lookup would let an attacker's
   name server answer differently the second time (DNS rebinding).

``allow_private`` is a narrow, explicit ``ip:port`` exception list (tests reach
their own servers through it); cloud metadata addresses can never be excepted.

Exceptions::

    FetchRefused            the guard said no; ``reason`` says why (a ledger ``fetch.refused``)
      ├── InvalidURL        unparseable URL or host
      ├── SchemeRefused     not http/https
      ├── CredentialsInURL  userinfo present
      ├── HostRefused       special-use or metadata name, or domain list
      ├── AddressRefused    a resolved or literal address is not public
      ├── ResolveFailed     the name does not resolve
      ├── RedirectRefused   too many redirects, or a bad Location
      ├── ContentRefused    content type not allowed, or body over the byte cap
      ├── FetchTimeout      connect/read/total deadline passed
      └── BudgetExceeded    the session used its fetch budget
    FetchFailed             the network failed (refused connection, TLS error): not a refusal
"""

from __future__ import annotations

import ipaddress
import socket
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, unquote, urlsplit

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefused(Exception):
    """The guard refused a request; ``reason`` is a sentence the model and the ledger can read."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused to fetch {url!r}: {reason}")
        self.url = url
        self.reason = reason


class InvalidURL(FetchRefused):
    pass


class SchemeRefused(FetchRefused):
    pass


class CredentialsInURL(FetchRefused):
    pass


class HostRefused(FetchRefused):
    pass


class AddressRefused(FetchRefused):
    pass


class ResolveFailed(FetchRefused):
    pass


class RedirectRefused(FetchRefused):
    pass


class ContentRefused(FetchRefused):
    pass


class FetchTimeout(FetchRefused):
    pass


class BudgetExceeded(FetchRefused):
    pass


class FetchFailed(Exception):
    """The request was allowed but the network failed (connection refused, reset, TLS)."""


METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS DNS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
# RFC 6761 / RFC 6762 / RFC 8375 special-use suffixes that never name a public host.
SPECIAL_SUFFIXES = ("localhost", "local", "internal", "home.arpa", "localdomain", "arpa", "onion", "test", "invalid")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
HOST_CHARS = frozenset(string.ascii_lowercase + string.digits + "-._")


DEFAULT_CONTENT_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "text/plain",
    "text/markdown",
    "text/csv",
    "text/xml",
    "application/xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/json",
    "application/ld+json",
    "application/pdf",
)


class RenderSettings(BaseModel):
    """How ``render: true`` drives headless Chromium (see :mod:`tools.render`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Allow `render: true` (a real headless Chromium) at all.")
    chromium_path: str = Field(
        "/usr/lib/chromium/chromium",
        description="The Chromium binary (Debian package chromium). Not the /usr/bin/chromium launcher script, "
        "which sources /etc/chromium.d (Google API keys, extra flags) into the browser.",
    )
    run_as_uid: int = Field(65534, description="When keyhand runs as root, Chromium runs as this uid (nobody).")
    timeout_s: float = Field(30.0, gt=0, le=300, description="Deadline for loading and rendering one page.")
    max_requests: int = Field(200, ge=1, description="Requests one rendered page may make (subresources, XHR).")
    max_bytes: int = Field(20_000_000, ge=1, description="Bytes one rendered page may receive through the proxy.")


class FetchSettings(BaseModel):
    """The ``fetch:`` section of the gateway config: what ``web_fetch`` may reach and how much."""

    model_config = ConfigDict(extra="forbid")

    allow_domains: list[str] = Field(
        default_factory=list, description="If not empty, only these domains (and their subdomains) are fetched."
    )
    deny_domains: list[str] = Field(default_factory=list, description="Domains (and subdomains) never fetched.")
    allow_private: list[str] = Field(
        default_factory=list,
        description="Narrow exceptions to the public-address rule, as 'ip:port' (e.g. '127.0.0.1:8080'). "
        "Cloud metadata addresses cannot be excepted.",
    )
    max_redirects: int = Field(5, ge=0, le=5, description="Redirects followed (each hop checked again).")
    connect_timeout_s: float = Field(10.0, gt=0, description="Deadline for resolving and connecting.")
    read_timeout_s: float = Field(20.0, gt=0, description="Longest wait for the next bytes from the server.")
    total_timeout_s: float = Field(60.0, gt=0, description="Deadline for one whole fetch, redirects included.")
    max_bytes: int = Field(5_000_000, ge=1, description="Largest body read; larger bodies are refused.")
    content_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CONTENT_TYPES), description="Media types accepted (no parameters)."
    )
    max_fetches_per_session: int = Field(100, ge=0, description="Fetches one session may make in all.")
    user_agent: str = Field("keyhand-web-fetch/0.1 (+https://github.com/keyhand)", description="User-Agent sent.")
    render: RenderSettings = Field(default_factory=RenderSettings, description="Headless Chromium for `render: true`.")

    @field_validator("allow_private")
    @classmethod
    def _exceptions_are_narrow(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ip, _port = _parse_exception(entry)
            except ValueError:
                raise ValueError(f"allow_private entry {entry!r} must be 'ip:port', e.g. '127.0.0.1:8080'") from None
            if ip in METADATA_ADDRESSES:
                raise ValueError(f"allow_private entry {entry!r} is a cloud metadata address and cannot be excepted")
        return entries


def _v4_problem(ip: ipaddress.IPv4Address) -> str | None:
    checks = (
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip in CGNAT, "a carrier-grade NAT address (RFC 6598)"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address (RFC 1918 or special-purpose)"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for bad, why in checks if bad), None)


def _embedded_v4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    for net in NAT64_PREFIXES:
        if ip in net:
            return "NAT64 (RFC 6052)", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be contacted, or ``None`` when it is a public unicast address."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_problem(ip)
    embedded = _embedded_v4(ip)
    if embedded is not None:
        form, v4 = embedded
        inner = address_problem(v4)
        return f"the {form} form of {v4}, {inner}" if inner else None
    checks = (
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_site_local, "a site-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in ipaddress.ip_network("fc00::/7"), "a unique-local address (RFC 4193)"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private or not ip.is_global, "not a public address"),
    )
    return next((why for bad, why in checks if bad), None)


def _ipv4_part(part: str) -> int | None:
    """One part of a WHATWG/inet_aton IPv4 host: decimal, ``0``-prefixed octal or ``0x`` hex."""
    try:
        if part[:2].lower() == "0x":
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10)
    except ValueError:
        return None


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """WHATWG URL §3.5 "IPv4 parser" (what browsers and libc ``inet_aton`` accept).

    Returns ``None`` when the host does not end in a number (it is a name); raises
    ``ValueError`` when it ends in a number but is not a valid IPv4 address.
    """
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if not (last.isdigit() or (last[:2].lower() == "0x" and all(c in string.hexdigits for c in last[2:]))):
        return None
    numbers = [_ipv4_part(p) for p in parts] if all(parts) else [None]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise ValueError("malformed numeric IPv4 host")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise ValueError("numeric IPv4 host out of range")
    value = values[-1]
    for i, n in enumerate(values[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_host(url: str, raw_host: str) -> str | IPAddress:
    """Normalise a URL host to an IP address or a lower-case ASCII name.

    Percent-decodes, strips one trailing dot, maps IDNA (RFC 5891) and parses every
    numeric IPv4 spelling; raises :class:`InvalidURL` when that is not possible.
    """
    host = unquote(raw_host).strip()
    if host.startswith("[") and host.endswith("]"):
        try:
            v6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidURL(url, f"{host!r} is not a valid IPv6 literal") from None
        if v6.scope_id:
            raise InvalidURL(url, f"{host!r} has a zone id; scoped IPv6 addresses are never public")
        return v6
    try:
        host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
        v4 = _parse_ipv4(host) if host else None
    except (UnicodeError, ValueError) as exc:
        raise InvalidURL(url, f"host {raw_host!r} is not valid: {exc}") from None
    if v4 is not None:
        return v4
    host = host.removesuffix(".")
    if not host or not set(host) <= HOST_CHARS or ".." in host:
        raise InvalidURL(url, f"host {raw_host!r} is not a valid host name")
    return host


class Resolver(Protocol):
    """Resolves a name to every address it has (A and AAAA). Tests substitute their own."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The system's resolver (``getaddrinfo``), asking for both address families."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise LookupError(str(exc)) from exc
        out: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in out:
                out.append(ip)
        return out


@dataclass(frozen=True, slots=True)
class Target:
    """A URL the guard allowed, with the only addresses a caller may connect to for it."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]
    target: str = "/"

    @property
    def request_url(self) -> str:
        """The URL to send: the normalised host (the one that was checked), no fragment."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def _domain_matches(host: str, domains: Sequence[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in (x.lower().strip(".") for x in domains))


class Guard:
    """Checks URLs against :class:`FetchSettings`; holds the per-session fetch budget."""

    def __init__(self, settings: FetchSettings, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.resolver: Resolver = resolver or SystemResolver()
        self._exceptions = {_parse_exception(e) for e in settings.allow_private}
        self._used: dict[str, int] = {}

    def charge(self, session_id: str, url: str) -> None:
        """Count one fetch against the session's budget; raises :class:`BudgetExceeded`."""
        used = self._used.get(session_id, 0)
        if used >= self.settings.max_fetches_per_session:
            raise BudgetExceeded(url, f"this session used its budget of {used} fetches (max_fetches_per_session)")
        self._used[session_id] = used + 1

    async def check(self, url: str) -> Target:
        """Check ``url`` completely (syntax, names, lists, every resolved address) and return its target."""
        parts = self._split(url)
        host = parse_host(url, parts.hostname or "" if "[" not in parts.netloc else _bracketed(parts.netloc))
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidURL(url, "the port is not a number between 0 and 65535") from None
        if isinstance(host, str):
            self._check_name(url, host)
            addresses = await self._resolve(url, host, port)
        else:
            if self.settings.allow_domains:
                raise HostRefused(url, "IP address URLs are refused because this profile only allows listed domains")
            addresses = [host]
        for ip in addresses:
            self._check_address(url, ip, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(url, parts.scheme, str(host), port, tuple(addresses), target)

    def _split(self, url: str) -> SplitResult:
        if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in url):
            raise InvalidURL(url, "the URL contains whitespace, control characters or backslashes")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise InvalidURL(url, f"cannot parse the URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise SchemeRefused(url, f"only http and https URLs are fetched, not {parts.scheme or 'a relative URL'!r}")
        if "@" in parts.netloc:
            raise CredentialsInURL(url, "URLs with a user name or password are refused; pass no credentials in URLs")
        if not parts.netloc:
            raise InvalidURL(url, "the URL has no host")
        return parts

    def _check_name(self, url: str, host: str) -> None:
        if host in METADATA_NAMES:
            raise HostRefused(url, f"{host!r} is a cloud metadata service name")
        if "." not in host or host.endswith(tuple("." + s for s in SPECIAL_SUFFIXES)) or host in SPECIAL_SUFFIXES:
            raise HostRefused(url, f"{host!r} is a local or special-use name (RFC 6761), not a public host")
        if _domain_matches(host, self.settings.deny_domains):
            raise HostRefused(url, f"{host!r} is on this profile's deny list")
        if self.settings.allow_domains and not _domain_matches(host, self.settings.allow_domains):
            raise HostRefused(url, f"{host!r} is not on this profile's allow list")

    async def _resolve(self, url: str, host: str, port: int) -> list[IPAddress]:
        try:
            with anyio.fail_after(self.settings.connect_timeout_s):
                addresses = await self.resolver.resolve(host, port)
        except TimeoutError:
            raise FetchTimeout(url, f"resolving {host!r} took longer than {self.settings.connect_timeout_s}s") from None
        except (LookupError, OSError) as exc:
            raise ResolveFailed(url, f"{host!r} does not resolve ({exc})") from None
        if not addresses:
            raise ResolveFailed(url, f"{host!r} has no A or AAAA records")
        return addresses

    def _check_address(self, url: str, ip: IPAddress, port: int) -> None:
        problem = address_problem(ip)
        if problem is None:
            return
        if ip not in METADATA_ADDRESSES and (ip, port) in self._exceptions:
            return
        raise AddressRefused(url, f"{ip} is {problem}; only public addresses are fetched")


def _bracketed(netloc: str) -> str:
    return netloc[netloc.index("[") : netloc.index("]") + 1] if "]" in netloc else netloc


def _parse_exception(entry: str) -> tuple[IPAddress, int]:
    host, _, port = entry.rpartition(":")
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(entry)
    return ipaddress.ip_address(host.strip("[]")), number
