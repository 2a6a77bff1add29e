"""``render: true`` in the real headless Chromium (Debian ``chromium``), every request through the guard proxy.

Few and quick: each test launches one browser.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.web_servers import MapResolver, RecordingContext, Server
from tools.base import ToolError
from tools.browse import WebFetchTool, web_fetch_tool
from tools.netguard import FetchSettings, RenderSettings

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium is not installed"),
]

SITE = "render.keyhand-tests.example"


@pytest.fixture
def tool(site: Server) -> WebFetchTool:
    settings = FetchSettings(allow_private=[site.exception], render=RenderSettings(timeout_s=30))
    return web_fetch_tool(settings, resolver=MapResolver({SITE: ["127.0.0.1"]}))


async def test_a_rendered_page_shows_script_output_and_its_private_fetch_is_blocked(
    tool: WebFetchTool, site: Server, sink: Server
) -> None:
    ctx = RecordingContext()
    result = await tool.call(ctx, {"url": f"http://{SITE}:{site.port}/js?sink={sink.port}", "render": True})
    text = result.joined_text()
    assert "# Static heading" in text and "Rendered by script" in text
    assert "private fetch: not attempted" not in text  # the script ran and its fetch came back refused
    assert sink.hits == []
    refused = [e for e in ctx.refusals() if str(sink.port) in e["url"]]
    assert refused and refused[0]["via"] == "render" and "loopback" in refused[0]["reason"]
    assert "blocked" in text


async def test_chromium_runs_unprivileged_with_its_own_sandbox(tool: WebFetchTool, site: Server) -> None:
    result = await tool.call(RecordingContext(), {"url": f"http://{SITE}:{site.port}/js", "render": True})
    procs = result.joined_text().split("</untrusted-web-content>")[0]
    expected_uid = "65534" if os.geteuid() == 0 else str(os.geteuid())
    assert f"uid={expected_uid} no-sandbox=False" in procs
    assert "uid=0" not in procs and "no-sandbox=True" not in procs


async def test_a_rendered_redirect_to_a_private_address_is_refused(
    tool: WebFetchTool, site: Server, sink: Server
) -> None:
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="loopback"):
        await tool.call(ctx, {"url": f"http://{SITE}:{site.port}/to?url={sink.base}/admin", "render": True})
    assert sink.hits == [] and ctx.refusals()


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "file:///etc/passwd", "http://localhost:8765/"])
async def test_a_hostile_url_is_refused_before_any_browser_starts(tool: WebFetchTool, url: str) -> None:
    ctx = RecordingContext()
    with pytest.raises(ToolError, match="refused to fetch"):
        await tool.call(ctx, {"url": url, "render": True})
    assert len(ctx.refusals()) == 1
