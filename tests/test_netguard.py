"""The SSRF suite: hostile URLs that must all be refused, each refusal recorded in the ledger.

Loopback targets point at a real "private service" (``sink``) on 127.0.0.1 that
counts its requests: it must never see one. Names resolve through a test
resolver that never asks real DNS. No hostile address is ever contacted: the
guard refuses before connecting.
"""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from tests.web_servers import MapResolver, RecordingContext, Server
from tools.base import ToolError
from tools.browse import WebFetchTool, web_fetch_tool
from tools.netguard import (
    AddressRefused,
    FetchRefused,
    FetchSettings,
    Guard,
    HostRefused,
    InvalidURL,
    address_problem,
    parse_host,
)

pytestmark = pytest.mark.anyio

SITE = "site.keyhand-tests.example"
HOSTILE_NAMES = {
    SITE: ["127.0.0.1"],
    "rebind.attacker.example": ["93.184.216.34", "127.0.0.1"],  # a public answer first, a private one second
    "private.attacker.example": ["10.0.0.1"],
    "ula.attacker.example": ["fd12:3456::1"],
    "mapped.attacker.example": ["::ffff:169.254.169.254"],
    "nat64.attacker.example": ["64:ff9b::7f00:1"],
    "cgnat.attacker.example": ["100.64.1.1"],
    "mixed6.attacker.example": ["2606:4700::1111", "::1"],
    "meta.attacker.example": ["169.254.169.254"],
}

# {P}: the private service's port (open on 127.0.0.1, not excepted); {S}: the allowed site's port.
HOSTILE = [
    "http://127.0.0.1:{P}/",
    "https://127.0.0.1:{P}/",
    "http://localhost:{P}/",
    "http://LOCALHOST:{P}/",
    "http://localhost.:{P}/",
    "http://admin.localhost:{P}/",
    "http://127.0.0.1.:{P}/",
    "http://2130706433:{P}/",
    "http://0177.0.0.1:{P}/",
    "http://0x7f.0.0.1:{P}/",
    "http://0x7f000001:{P}/",
    "http://0x7f.1:{P}/",
    "http://127.1:{P}/",
    "http://127.0.1:{P}/",
    "http://0177.1:{P}/",
    "http://0x7f.0.0.0x1:{P}/",
    "http://0x7f.0x0.0x0.0x1:{P}/",
    "http://017700000001:{P}/",
    "http://%31%32%37.0.0.1:{P}/",
    "http://0.0.0.0:{P}/",
    "http://0:{P}/",
    "http://[::1]:{P}/",
    "http://[::]:{P}/",
    "http://[::ffff:127.0.0.1]:{P}/",
    "http://[::ffff:7f00:1]:{P}/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{P}/",
    "http://[64:ff9b::127.0.0.1]:{P}/",
    "http://[::127.0.0.1]:{P}/",
    "http://[2002:7f00:1::]:{P}/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00::1]/",
    "http://[ff02::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://metadata/",
    "http://instance-data/latest/",
    "http://100.100.100.200/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://198.18.0.1/",
    "http://192.0.2.1/",
    "http://rebind.attacker.example/",
    "http://private.attacker.example/",
    "http://ula.attacker.example/",
    "http://mapped.attacker.example/",
    "http://nat64.attacker.example/",
    "http://cgnat.attacker.example/",
    "http://mixed6.attacker.example/",
    "http://meta.attacker.example/",
    "http://intranet/",
    "http://printer.local/",
    "http://nxdomain.attacker.example/",
    "http://256.0.0.1/",
    "http://1.2.3.4.5/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{P}/_GET",
    "ftp://ftp.example.com/",
    "data:text/html,<h1>hi</h1>",
    "javascript:alert(1)",
    "//127.0.0.1:{P}/",
    "http://user:pass@example.com/",
    "http://example.com@127.0.0.1:{P}/",
    "http://127.0.0.1:{P}\\@example.com/",
    "http://example.com:99999/",
    # redirects from an allowed page to private places: each hop is checked again
    "http://" + SITE + ":{S}/to?url=http://127.0.0.1:{P}/admin",
    "http://" + SITE + ":{S}/to?url=http://2130706433:{P}/admin",
    "http://" + SITE + ":{S}/to?url=http://169.254.169.254/latest/meta-data/",
    "http://" + SITE + ":{S}/to?url=http://[::ffff:127.0.0.1]:{P}/",
    "http://" + SITE + ":{S}/to?url=file:///etc/passwd",
    "http://" + SITE + ":{S}/to?url=http://metadata.google.internal/",
]


@pytest.fixture
def tool(site: Server) -> WebFetchTool:
    return web_fetch_tool(FetchSettings(allow_private=[site.exception]), resolver=MapResolver(dict(HOSTILE_NAMES)))


def test_the_suite_has_at_least_forty_hostile_urls() -> None:
    assert len(HOSTILE) >= 40 and len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize("template", HOSTILE)
async def test_a_hostile_url_is_refused_and_the_refusal_is_recorded(
    template: str, tool: WebFetchTool, site: Server, sink: Server
) -> None:
    url = template.replace("{P}", str(sink.port)).replace("{S}", str(site.port))
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="refused to fetch") as caught:
        await tool.call(ctx, {"url": url})
    [refusal] = ctx.refusals()
    assert refusal["url"] == url and refusal["reason"] and refusal["reason"] in str(caught.value)
    assert sink.hits == []


async def test_the_explicit_exception_is_for_one_port_only(tool: WebFetchTool, site: Server, sink: Server) -> None:
    ctx = RecordingContext()
    result = await tool.call(ctx, {"url": f"http://127.0.0.1:{site.port}/application-json"})
    assert '"answer": 42' in result.joined_text() and ctx.events == []
    with pytest.raises(ToolError, match="loopback"):
        await tool.call(ctx, {"url": f"http://127.0.0.1:{sink.port}/"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.0x1", "127.0.0.1"),
        ("10.1.0x100", "10.1.1.0"),
        ("0", "0.0.0.0"),
        ("8.8.8.8.", "8.8.8.8"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_hosts_are_normalised_the_way_a_resolver_would_read_them(raw: str, expected: str) -> None:
    assert str(parse_host("http://x/", raw)) == expected


@pytest.mark.parametrize("raw", ["1.2.3.4.5", "256.1", "0x100.1.1.1", "09.1.1.1", "1..2", "a_b c", "[::1%eth0]", ""])
def test_malformed_hosts_are_invalid_rather_than_guessed(raw: str) -> None:
    with pytest.raises(InvalidURL):
        parse_host("http://x/", raw)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::"]
)
def test_public_addresses_and_their_translated_forms_are_allowed(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


async def test_a_name_is_resolved_once_and_all_its_addresses_are_kept_for_pinning(site: Server) -> None:
    resolver = MapResolver({"dual.keyhand-tests.example": ["127.0.0.1", "::1"]})
    settings = FetchSettings(allow_private=[site.exception, f"[::1]:{site.port}"])
    target = await Guard(settings, resolver).check(f"https://dual.keyhand-tests.example:{site.port}/a?b=c#frag")
    assert [str(a) for a in target.addresses] == ["127.0.0.1", "::1"] and resolver.calls == [target.host]
    assert target.request_url == f"https://dual.keyhand-tests.example:{site.port}/a?b=c"


async def test_refusals_are_specific_exception_types() -> None:
    guard = Guard(FetchSettings(), MapResolver({}))
    with pytest.raises(AddressRefused, match="a cloud metadata address"):
        await guard.check("http://169.254.169.254/")
    with pytest.raises(HostRefused, match="cloud metadata service name"):
        await guard.check("http://metadata.google.internal/")
    assert issubclass(AddressRefused, FetchRefused) and issubclass(HostRefused, FetchRefused)


def test_metadata_addresses_cannot_be_excepted() -> None:
    with pytest.raises(ValidationError, match="cloud metadata"):
        FetchSettings(allow_private=["169.254.169.254:80"])
    with pytest.raises(ValidationError, match="ip:port"):
        FetchSettings(allow_private=["127.0.0.1"])


def test_the_settings_forbid_unknown_fields_and_describe_every_field() -> None:
    with pytest.raises(ValidationError):
        FetchSettings.model_validate({"allow_privat": []})
    for model in (FetchSettings, FetchSettings.model_fields["render"].annotation):
        assert model is not None
        for name, info in model.model_fields.items():  # type: ignore[union-attr]
            assert info.description, f"{model.__name__}.{name} has no description"
