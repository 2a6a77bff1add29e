"""A harness reads the ledger in slices, appends its own events, and follows it live."""

from __future__ import annotations

import json
import sqlite3

import anyio
import pytest

from tests.conftest import Gateway, StartGateway

pytestmark = pytest.mark.anyio


async def new_session(gateway: Gateway, key: str = "admin") -> str:
    async with gateway.http(key) as http:
        response = await http.post("/v1/sessions")
    assert response.status_code == 201
    return str(response.json()["id"])


async def test_a_harness_appends_messages_and_reads_them_back_in_slices(gateway: Gateway) -> None:
    sid = await new_session(gateway)
    async with gateway.http() as http:
        batch = [{"type": "user.message", "data": {"text": f"m{i}"}} for i in range(10)]
        appended = await http.post(f"/v1/sessions/{sid}/events", json={"events": batch})
        assert appended.status_code == 201
        assert [e["seq"] for e in appended.json()["events"]] == list(range(2, 12))
        middle = (await http.get(f"/v1/sessions/{sid}/events", params={"after": 3, "before": 7})).json()
        newest = (await http.get(f"/v1/sessions/{sid}/events", params={"order": "desc", "limit": 2})).json()
        typed = (await http.get(f"/v1/sessions/{sid}/events", params={"types": "session.*"})).json()
        info = (await http.get(f"/v1/sessions/{sid}")).json()
    assert [e["seq"] for e in middle["events"]] == [4, 5, 6]
    assert [e["data"]["text"] for e in newest["events"]] == ["m9", "m8"]
    assert [e["type"] for e in typed["events"]] == ["session.created"]
    assert info["last_seq"] == 11


@pytest.mark.parametrize(
    "forged", ["tool.result", "credential.used", "policy.answered", "sandbox.lost", "session.created"]
)
async def test_a_client_cannot_forge_the_gateways_own_event_types(gateway: Gateway, forged: str) -> None:
    sid = await new_session(gateway)
    async with gateway.http() as http:
        response = await http.post(
            f"/v1/sessions/{sid}/events",
            json={"events": [{"type": "user.message", "data": {}}, {"type": forged, "data": {"ok": True}}]},
        )
        events = (await http.get(f"/v1/sessions/{sid}/events")).json()["events"]
    assert response.status_code == 400
    assert forged in response.json()["error"]["message"]
    assert [e["type"] for e in events] == ["session.created"]  # all or nothing


@pytest.mark.parametrize(
    ("body", "params"),
    [
        (b"not json", {}),
        (b'{"type": "User Message"}', {}),
        (b'{"type": "user.message", "data": []}', {}),
        (None, {"limit": "lots"}),
        (None, {"limit": "0"}),
        (None, {"order": "sideways"}),
        (None, {"types": "DROP TABLE"}),
    ],
)
async def test_bad_input_to_the_ledger_api_is_a_400_with_a_message(
    gateway: Gateway, body: bytes | None, params: dict[str, str]
) -> None:
    sid = await new_session(gateway)
    async with gateway.http() as http:
        if body is not None:
            response = await http.post(f"/v1/sessions/{sid}/events", content=body)
        else:
            response = await http.get(f"/v1/sessions/{sid}/events", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


async def read_sse(gateway: Gateway, sid: str, want: int, last_event_id: str | None = None) -> list[dict]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict] = []
    async with gateway.http() as http:
        with anyio.fail_after(20):
            async with http.stream("GET", f"/v1/sessions/{sid}/stream", headers=headers) as response:
                assert response.status_code == 200
                event_id = None
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        event_id = int(line[4:])
                    elif line.startswith("data: "):
                        event = json.loads(line[6:])
                        assert event["seq"] == event_id
                        events.append(event)
                        if len(events) == want:
                            break
    return events


async def test_the_stream_delivers_live_events_and_resumes_after_last_event_id(gateway: Gateway) -> None:
    sid = await new_session(gateway)
    received: list[dict] = []

    async def follow() -> None:
        received.extend(await read_sse(gateway, sid, want=6))

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        async with gateway.http() as http:
            for i in range(5):
                await http.post(f"/v1/sessions/{sid}/events", json={"type": "agent.message", "data": {"i": i}})
    assert [e["seq"] for e in received] == [1, 2, 3, 4, 5, 6]
    resumed = await read_sse(gateway, sid, want=2, last_event_id="4")
    assert [e["seq"] for e in resumed] == [5, 6]


async def test_verify_detects_a_tampered_event_and_names_it(start_gateway: StartGateway) -> None:
    gw = start_gateway()
    sid = await new_session(gw)
    async with gw.http() as http:
        for i in range(5):
            await http.post(f"/v1/sessions/{sid}/events", json={"type": "user.message", "data": {"n": i}})
    ok = gw.cli("sessions", "verify", sid)
    assert "chain ok" in ok.stdout
    gw.stop()
    conn = sqlite3.connect(gw.home / "keyhand.db")
    conn.execute("UPDATE events SET data = ? WHERE session_id = ? AND seq = 4", ('{"n":99}', sid))
    conn.commit()
    conn.close()
    bad = gw.cli("sessions", "verify", sid, check=False)
    assert bad.returncode == 1
    assert "seq 4" in bad.stdout
    conn = sqlite3.connect(gw.home / "keyhand.db")
    conn.execute("DELETE FROM events WHERE session_id = ? AND seq = 2", (sid,))
    conn.commit()
    conn.close()
    gap = gw.cli("sessions", "verify", sid, check=False)
    assert gap.returncode == 1 and "seq 3" in gap.stdout
