"""The ledger HTTP API under ``/v1/sessions``.

    GET  /v1/sessions                      the caller's sessions (all, for an admin key)
    POST /v1/sessions                      create a session (a harness starting work)
    GET  /v1/sessions/{id}                 one session and its last seq
    GET  /v1/sessions/{id}/events          a slice: after, before, limit, types, order
    POST /v1/sessions/{id}/events          a harness appends its own events
    GET  /v1/sessions/{id}/stream          Server-Sent Events, resumable with Last-Event-ID

A harness may append only its own domains (:data:`CLIENT_DOMAINS`); the
gateway's own records (``tool.*``, ``credential.*``, ``policy.*``...) cannot be
forged and are refused with 400.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.auth import Principal
from gateway.errors import BadRequest
from gateway.ledger import EVENT_TYPE, Slice
from gateway.runtime import Runtime
from gateway.sessions import Session

CLIENT_DOMAINS = ("user", "agent", "harness", "note")
MAX_APPEND_BATCH = 100
HEARTBEAT_S = 15.0


def principal_of(request: Request) -> Principal:
    principal = request.scope["keyhand.principal"]
    assert isinstance(principal, Principal)
    return principal


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer") from None


def slice_from_query(request: Request) -> Slice:
    types = [t for t in request.query_params.get("types", "").split(",") if t]
    limit = _int_param(request, "limit")
    return Slice(
        after=_int_param(request, "after"),
        before=_int_param(request, "before"),
        limit=100 if limit is None else limit,
        types=tuple(types),
        order=request.query_params.get("order", "asc"),
    ).validated()


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body must be JSON") from None


def check_client_event(item: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise BadRequest("an event is an object with a string 'type' and an object 'data'")
    type_, data = item["type"], item.get("data", {})
    if not isinstance(data, dict):
        raise BadRequest("an event's 'data' must be an object")
    if not EVENT_TYPE.match(type_):
        raise BadRequest(f"event type {type_!r} is not of the form domain.action (lowercase)")
    if type_.split(".", 1)[0] not in CLIENT_DOMAINS:
        allowed = ", ".join(f"{d}.*" for d in CLIENT_DOMAINS)
        raise BadRequest(f"clients may not append {type_!r}; allowed types are {allowed}")
    return type_, data


class LedgerApi:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def routes(self) -> list[Route]:
        return [
            Route("/v1/sessions", self.list_sessions, methods=["GET"]),
            Route("/v1/sessions", self.create_session, methods=["POST"]),
            Route("/v1/sessions/{id}", self.get_session, methods=["GET"]),
            Route("/v1/sessions/{id}/events", self.list_events, methods=["GET"]),
            Route("/v1/sessions/{id}/events", self.append_events, methods=["POST"]),
            Route("/v1/sessions/{id}/stream", self.stream, methods=["GET"]),
        ]

    async def _session(self, request: Request) -> Session:
        return await self.rt.sessions.get(request.path_params["id"], principal_of(request))

    async def list_sessions(self, request: Request) -> Response:
        limit = _int_param(request, "limit") or 100
        sessions = await self.rt.sessions.list(principal_of(request), limit=min(limit, 1000))
        return JSONResponse({"sessions": [s.to_json() for s in sessions]})

    async def create_session(self, request: Request) -> Response:
        session = await self.rt.sessions.create(principal_of(request), client="http")
        return JSONResponse(session.to_json(), status_code=201)

    async def get_session(self, request: Request) -> Response:
        session = await self._session(request)
        last = await self.rt.ledger.last_seq(session.id)
        return JSONResponse({**session.to_json(), "last_seq": last})

    async def list_events(self, request: Request) -> Response:
        session = await self._session(request)
        events = await self.rt.ledger.read(session.id, slice_from_query(request))
        return JSONResponse({"session_id": session.id, "events": [e.to_json() for e in events]})

    async def append_events(self, request: Request) -> Response:
        session = await self._session(request)
        body = await read_json(request)
        items = body.get("events") if isinstance(body, dict) and "events" in body else [body]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_APPEND_BATCH:
            raise BadRequest(f"send one event, or 'events' with 1 to {MAX_APPEND_BATCH} of them")
        checked = [check_client_event(item) for item in items]  # all or nothing
        appended = [await self.rt.ledger.append(session.id, t, d) for t, d in checked]
        return JSONResponse({"events": [e.to_json() for e in appended]}, status_code=201)

    async def stream(self, request: Request) -> Response:
        session = await self._session(request)
        start = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
        try:
            after = int(start)
        except ValueError:
            raise BadRequest("Last-Event-ID must be the seq of the last event received") from None
        types = tuple(t for t in request.query_params.get("types", "").split(",") if t)
        return StreamingResponse(
            self._events(session.id, after, types),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, session_id: str, after: int, types: tuple[str, ...]) -> AsyncIterator[str]:
        """Read up to the last committed seq, wait for a newer one, repeat: nothing missed, nothing twice."""
        yield "retry: 1000\n\n"
        while True:
            last = await self.rt.ledger.last_seq(session_id)
            while after < last:
                window = Slice(after=after, before=last + 1, limit=500, types=types)
                events = await self.rt.ledger.read(session_id, window)
                for event in events:
                    yield f"id: {event.seq}\nevent: {event.type}\ndata: {json.dumps(event.to_json())}\n\n"
                after = events[-1].seq if len(events) == 500 else last
            if not await self.rt.ledger.wait_after(session_id, after, HEARTBEAT_S):
                yield ": keep-alive\n\n"
