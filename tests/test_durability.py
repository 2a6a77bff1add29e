"""An acknowledged event survives kill -9: no loss, no gaps, and the chain still verifies."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from tests.conftest import StartGateway

pytestmark = pytest.mark.anyio

WORKERS = 8
KILL_AFTER_ACKS = 600


async def test_events_acknowledged_before_a_sigkill_are_all_there_after_restart(start_gateway: StartGateway) -> None:
    gw = start_gateway()
    async with gw.http() as http:
        sid = (await http.post("/v1/sessions")).json()["id"]
    acked: dict[int, tuple[int, int]] = {}
    enough = anyio.Event()

    async def writer(worker: int) -> None:
        async with gw.http() as http:
            for i in range(100_000):
                try:
                    response = await http.post(
                        f"/v1/sessions/{sid}/events", json={"type": "agent.message", "data": {"w": worker, "i": i}}
                    )
                except httpx2.TransportError:
                    return
                if response.status_code != 201:
                    return
                acked[response.json()["events"][0]["seq"]] = (worker, i)
                if len(acked) >= KILL_AFTER_ACKS:
                    enough.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for w in range(WORKERS):
                tg.start_soon(writer, w)
            await enough.wait()
            gw.kill()

    gw.restart()
    stored: dict[int, tuple[int, int]] = {}
    async with gw.http() as http:
        after = 1  # seq 1 is session.created
        while True:
            page = (await http.get(f"/v1/sessions/{sid}/events", params={"after": after, "limit": 1000})).json()
            if not page["events"]:
                break
            for e in page["events"]:
                stored[e["seq"]] = (e["data"]["w"], e["data"]["i"])
            after = page["events"][-1]["seq"]
    assert len(acked) >= KILL_AFTER_ACKS
    missing = {seq: v for seq, v in acked.items() if stored.get(seq) != v}
    assert missing == {}
    assert sorted(stored) == list(range(2, 2 + len(stored)))
    verdict = gw.cli("sessions", "verify", sid)
    assert "chain ok" in verdict.stdout
