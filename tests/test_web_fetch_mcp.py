"""web_fetch through the real MCP endpoint: pages come back as Markdown, refusals land in the ledger."""

from __future__ import annotations

import pytest

from tests.conftest import StartGateway, text_of
from tests.web_servers import serve, sink_app, site_app

pytestmark = pytest.mark.anyio


async def test_an_agent_fetches_a_page_and_the_gateway_logs_every_refusal(start_gateway: StartGateway) -> None:
    with serve(site_app) as site, serve(sink_app) as private:
        gw = start_gateway({"fetch": {"allow_private": [site.exception]}})
        async with gw.client() as mcp:
            page = await mcp.call_tool("web_fetch", {"url": site.base + "/page"})
            refused = await mcp.call_tool("web_fetch", {"url": private.base + "/admin"})
            metadata = await mcp.call_tool("web_fetch", {"url": "http://169.254.169.254/latest/meta-data/"})
            sid = page.meta["keyhand/session"]
        async with gw.http() as http:
            events = (await http.get(f"/v1/sessions/{sid}/events", params={"types": "fetch.*,tool.error"})).json()
    assert "# Readable heading" in text_of(page) and not page.is_error
    assert refused.is_error and "loopback" in text_of(refused)
    assert metadata.is_error
    assert private.hits == []
    kinds = [e["type"] for e in events["events"]]
    assert kinds.count("fetch.refused") == 2 and kinds.count("tool.error") == 2
