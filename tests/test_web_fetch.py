"""``web_fetch`` against real servers on 127.0.0.1 (reached through a narrow ``allow_private`` exception)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web_servers import MapResolver, RecordingContext, Server, serve, site_app
from tests.web_tls import LocalPKI, make_pki
from tools.base import CallContext, Tool, ToolError
from tools.browse import WebFetchTool, web_fetch_tool
from tools.netguard import FetchSettings

pytestmark = pytest.mark.anyio

SITE = "site.keyhand-tests.example"


def make_tool(site: Server, **overrides: Any) -> tuple[WebFetchTool, MapResolver]:
    resolver = MapResolver({SITE: ["127.0.0.1"]})
    settings = FetchSettings(allow_private=[site.exception], **overrides)
    return web_fetch_tool(settings, resolver=resolver), resolver


def url(site: Server, path: str) -> str:
    return f"http://{SITE}:{site.port}{path}"


async def fetch(tool: WebFetchTool, ctx: RecordingContext, **args: Any) -> tuple[str, dict[str, Any]]:
    result = await tool.call(ctx, args)
    assert not result.is_error
    assert result.structured is not None
    return result.joined_text(), result.structured


async def test_the_tool_satisfies_the_tool_contract_with_honest_annotations(site: Server) -> None:
    tool, _ = make_tool(site)
    assert isinstance(tool, Tool)
    assert isinstance(RecordingContext(), CallContext)
    hints = tool.spec.annotations.to_mcp()
    assert hints["readOnlyHint"] is True and hints["openWorldHint"] is True and hints["destructiveHint"] is False
    assert set(tool.spec.input_schema["properties"]) == {"url", "max_length", "start_index", "raw", "render"}


async def test_html_becomes_markdown_of_the_main_content_with_absolute_links(site: Server) -> None:
    tool, _ = make_tool(site)
    text, meta = await fetch(tool, RecordingContext(), url=url(site, "/page"))
    assert "# Readable heading" in text
    assert f"[a relative link](http://{SITE}:{site.port}/other)" in text
    assert "**bold words**" in text and "- one" in text
    assert "Navigation link" not in text and "Site footer" not in text and "script text" not in text
    assert "title: Keyhand test page" in text
    assert meta["content_type"] == "text/html" and meta["untrusted"] is True


async def test_the_result_is_marked_as_untrusted_content_from_the_web(site: Server) -> None:
    tool, _ = make_tool(site)
    text, _ = await fetch(tool, RecordingContext(), url=url(site, "/page"))
    assert text.startswith("Untrusted content fetched from the web:")
    assert "<untrusted-web-content" in text and text.rstrip().endswith("</untrusted-web-content>")


async def test_raw_returns_the_html_source(site: Server) -> None:
    tool, _ = make_tool(site)
    text, _ = await fetch(tool, RecordingContext(), url=url(site, "/page"), raw=True)
    assert "<nav><a href=" in text and "<h1>Readable heading</h1>" in text


async def test_long_content_is_paginated_with_a_hint_for_the_next_slice(site: Server) -> None:
    tool, _ = make_tool(site)
    first, meta = await fetch(tool, RecordingContext(), url=url(site, "/long"), max_length=1000)
    assert meta["start_index"] == 0 and meta["end_index"] == 1000 and meta["next_start_index"] == 1000
    assert "start_index=1000" in first and "line 0000" in first and "line 0100" not in first
    second, meta2 = await fetch(tool, RecordingContext(), url=url(site, "/long"), max_length=1000, start_index=1000)
    assert "line 0100" in second and meta2["next_start_index"] == 2000
    last, meta3 = await fetch(tool, RecordingContext(), url=url(site, "/long"), start_index=meta["total_length"] - 10)
    assert meta3["next_start_index"] is None and "content truncated" not in last


async def test_a_start_index_past_the_end_is_a_tool_error_that_gives_the_length(site: Server) -> None:
    tool, _ = make_tool(site)
    with pytest.raises(ToolError, match="past the end"):
        await tool.call(RecordingContext(), {"url": url(site, "/long"), "start_index": 10_000_000})


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/application-json", '"answer": 42'), ("/application-xml", "<feed><item>x</item></feed>")],
)
async def test_json_and_xml_come_back_as_they_are(site: Server, path: str, expected: str) -> None:
    tool, _ = make_tool(site)
    text, _ = await fetch(tool, RecordingContext(), url=url(site, path))
    assert expected in text


async def test_pdf_comes_back_as_its_extracted_text(site: Server) -> None:
    tool, _ = make_tool(site)
    text, meta = await fetch(tool, RecordingContext(), url=url(site, "/application-pdf"))
    assert "Hello from a PDF" in text and meta["content_type"] == "application/pdf"


@pytest.mark.parametrize("path", ["/image-png", "/application-octet-stream", "/text-plain"])
async def test_binary_bodies_are_refused_and_recorded(site: Server, path: str) -> None:
    tool, _ = make_tool(site)
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="content type|binary"):
        await tool.call(ctx, {"url": url(site, path)})
    assert len(ctx.refusals()) == 1


@pytest.mark.parametrize("path", ["/big", "/declared-big"])
async def test_bodies_over_the_byte_cap_are_refused(site: Server, path: str) -> None:
    tool, _ = make_tool(site, max_bytes=100_000)
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="max_bytes=100000"):
        await tool.call(ctx, {"url": url(site, path)})
    assert "max_bytes" in ctx.refusals()[0]["reason"]


@pytest.mark.parametrize("path", ["/hold", "/drip"])
async def test_a_server_too_slow_to_answer_hits_the_read_timeout(site: Server, path: str) -> None:
    tool, _ = make_tool(site, read_timeout_s=0.3)
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="too slow"):
        await tool.call(ctx, {"url": url(site, path)})
    assert ctx.refusals()[0]["url"] == url(site, path)


async def test_a_chain_of_five_redirects_is_followed_and_reported(site: Server) -> None:
    tool, _ = make_tool(site)
    text, meta = await fetch(tool, RecordingContext(), url=url(site, "/redirect/5"))
    assert "# Readable heading" in text and len(meta["redirects"]) == 5
    assert meta["final_url"] == url(site, "/page") and "redirected from" in text


async def test_a_sixth_redirect_is_refused(site: Server) -> None:
    tool, _ = make_tool(site)
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="more than 5 redirects"):
        await tool.call(ctx, {"url": url(site, "/redirect/6")})
    assert len(ctx.refusals()) == 1


async def test_the_connection_goes_to_the_checked_address_with_the_original_host_header(site: Server) -> None:
    resolver = MapResolver({"pinned.keyhand-tests.example": ["127.0.0.1"]})
    tool = web_fetch_tool(FetchSettings(allow_private=[site.exception]), resolver=resolver)
    target = f"http://pinned.keyhand-tests.example:{site.port}/echo"
    text, _ = await fetch(tool, RecordingContext(), url=target)
    seen = json.loads(text.split('">\n', 1)[1].split("\n</untrusted", 1)[0])
    # The name exists only in the test resolver: a second (system) lookup would have failed.
    assert seen == {"host": f"pinned.keyhand-tests.example:{site.port}", "client": "127.0.0.1"}
    assert resolver.calls == ["pinned.keyhand-tests.example"]


async def test_a_resolver_that_would_answer_differently_the_second_time_is_asked_only_once(site: Server) -> None:
    class Rebinding(MapResolver):
        async def resolve(self, host: str, port: int) -> list[Any]:
            answers = await super().resolve(host, port)
            self.table[host] = ["10.0.0.7"]  # the attacker's second answer: never used
            return answers

    resolver = Rebinding({SITE: ["127.0.0.1"]})
    tool = web_fetch_tool(FetchSettings(allow_private=[site.exception]), resolver=resolver)
    text, _ = await fetch(tool, RecordingContext(), url=url(site, "/echo"))
    assert '"client":"127.0.0.1"' in text and resolver.calls == [SITE]


async def test_the_fetch_budget_is_per_session(site: Server) -> None:
    tool, _ = make_tool(site, max_fetches_per_session=2)
    ctx = RecordingContext(session_id="a")
    for _ in range(2):
        await fetch(tool, ctx, url=url(site, "/application-json"))
    with pytest.raises(ToolError, match="budget of 2 fetches"):
        await tool.call(ctx, {"url": url(site, "/application-json")})
    assert ctx.refusals()[0]["reason"].startswith("this session used its budget")
    await fetch(tool, RecordingContext(session_id="b"), url=url(site, "/application-json"))


async def test_the_deny_list_refuses_a_domain_and_its_subdomains(site: Server) -> None:
    tool, _ = make_tool(site, deny_domains=["keyhand-tests.example"])
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="deny list"):
        await tool.call(ctx, {"url": url(site, "/page")})
    assert "deny list" in ctx.refusals()[0]["reason"]


async def test_the_allow_list_refuses_every_other_domain(site: Server) -> None:
    resolver = MapResolver({SITE: ["127.0.0.1"], "other.example.org": ["127.0.0.1"]})
    settings = FetchSettings(allow_private=[site.exception], allow_domains=["keyhand-tests.example"])
    tool = web_fetch_tool(settings, resolver=resolver)
    await fetch(tool, RecordingContext(), url=url(site, "/application-json"))
    with pytest.raises(ToolError, match="not on this profile's allow list"):
        await tool.call(RecordingContext(), {"url": f"http://other.example.org:{site.port}/application-json"})


async def test_an_http_error_status_is_a_tool_error_but_not_a_refusal(site: Server) -> None:
    tool, _ = make_tool(site)
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="HTTP 404"):
        await tool.call(ctx, {"url": url(site, "/missing")})
    assert ctx.refusals() == [] and ctx.events[0][0] == "fetch.failed"


async def test_the_redirect_to_a_private_service_never_reaches_it(site: Server, sink: Server) -> None:
    tool, _ = make_tool(site)
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="loopback"):
        await tool.call(ctx, {"url": url(site, f"/to?url={sink.base}/admin")})
    assert sink.hits == [] and ctx.refusals()[0]["refused_url"] == f"{sink.base}/admin"


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, LocalPKI]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"), "tls.keyhand-tests.example")
    with serve(site_app, ssl_certfile=str(pki.cert_file), ssl_keyfile=str(pki.key_file)) as server:
        yield server, pki


async def test_https_to_the_pinned_address_verifies_the_certificate_for_the_original_name(
    tls_site: tuple[Server, LocalPKI],
) -> None:
    server, pki = tls_site
    resolver = MapResolver({"tls.keyhand-tests.example": ["127.0.0.1"]})
    tool = web_fetch_tool(
        FetchSettings(allow_private=[server.exception]), resolver=resolver, ssl_context=pki.client_context()
    )
    text, meta = await fetch(tool, RecordingContext(), url=f"https://tls.keyhand-tests.example:{server.port}/echo")
    assert f'"host":"tls.keyhand-tests.example:{server.port}"' in text and meta["status"] == 200


async def test_https_refuses_a_certificate_that_does_not_name_the_requested_host(
    tls_site: tuple[Server, LocalPKI],
) -> None:
    server, pki = tls_site
    resolver = MapResolver({"other.keyhand-tests.example": ["127.0.0.1"]})
    tool = web_fetch_tool(
        FetchSettings(allow_private=[server.exception]), resolver=resolver, ssl_context=pki.client_context()
    )
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        await tool.call(ctx, {"url": f"https://other.keyhand-tests.example:{server.port}/echo"})
    assert ctx.events[0][0] == "fetch.failed"
