"""A scripted model behind a real Messages API server (``POST /v1/messages``) on 127.0.0.1.

The server speaks the Messages API's JSON (content blocks, ``tool_use`` with ids,
``stop_reason``, ``usage``) and checks each request the way the real API does
(roles alternate, every ``tool_use`` is answered by a ``tool_result`` in the next
user turn, tools are defined when the history holds tool blocks), answering 400
with the API's error shape otherwise, so a harness bug fails loudly.

Which scripted turn answers a request: the first time a conversation (the exact
``messages``) is seen it gets the next turn of the script; seeing the same
conversation again gets the same turn. So a harness that was killed while waiting
for turn k and resumed from the ledger asks the same question and gets turn k,
whatever happened in between. A request with ``tool_choice: {"type": "none"}`` is a
compaction request and gets :attr:`FakeMessagesApi.summary` without using a turn.

``Turn(..., hold=True)`` makes the first request for that turn wait until
:meth:`FakeMessagesApi.release`: a test waits for the request, then kills the
harness while it is blocked there. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Block = dict[str, Any]
WAIT_S = 60.0


def text(value: str) -> Block:
    return {"type": "text", "text": value}


def use(name: str, **arguments: Any) -> Block:
    """A ``tool_use`` block; its id is assigned when the turn is served."""
    return {"type": "tool_use", "name": name, "input": arguments}


@dataclass
class Turn:
    content: list[Block]
    hold: bool = False


class ProtocolError(ValueError):
    """The request breaks a rule of the Messages API."""


def check_request(body: Any) -> None:
    """Raise :class:`ProtocolError` where the real API would answer 400."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or "max_tokens" not in body:
        raise ProtocolError("model and max_tokens are required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
        raise ProtocolError("messages must be a non-empty list starting with a user turn")
    has_tool_blocks = False
    for i, message in enumerate(messages):
        if message.get("role") != ("user" if i % 2 == 0 else "assistant"):
            raise ProtocolError(f"messages.{i}: roles must alternate user/assistant")
        content = message["content"] if isinstance(message["content"], list) else []
        has_tool_blocks |= any(b.get("type") in ("tool_use", "tool_result") for b in content)
        uses = [b["id"] for b in content if b.get("type") == "tool_use"]
        if uses:
            answers = messages[i + 1]["content"] if i + 1 < len(messages) else None
            if answers is None:
                raise ProtocolError(f"messages.{i}: the last message may not be an assistant tool_use turn")
            results = [b.get("tool_use_id") for b in answers if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results != uses or any(b.get("type") != "tool_result" for b in answers[: len(uses)]):
                raise ProtocolError(f"messages.{i + 1}: tool_result blocks for {uses} must come first, in order")
    if has_tool_blocks and not body.get("tools"):
        raise ProtocolError("requests with tool_use or tool_result blocks must define tools")


@dataclass
class FakeMessagesApi:
    turns: list[Turn]
    summary: str = "Summary: files were written and checked; carry on with the next step."
    requests: list[Block] = field(default_factory=list)
    api_keys: list[str] = field(default_factory=list)
    url: str = ""
    _served: dict[str, int] = field(default_factory=dict)
    _held: set[int] = field(default_factory=set)
    _released: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    # -- the server side --------------------------------------------------------

    async def messages(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        with self._changed:
            self.requests.append(body)
            self.api_keys.append(request.headers.get("x-api-key", ""))
            self._changed.notify_all()
        try:
            check_request(body)
        except ProtocolError as exc:
            error = {"type": "invalid_request_error", "message": str(exc)}
            return JSONResponse({"type": "error", "error": error}, status_code=400)
        if (body.get("tool_choice") or {}).get("type") == "none":
            return JSONResponse(self.reply(body, "summary", [text(self.summary)]))
        index = self._turn_for(body["messages"])
        if index >= len(self.turns):
            error = {"type": "invalid_request_error", "message": f"the script has no turn {index}"}
            return JSONResponse({"type": "error", "error": error}, status_code=400)
        turn = self.turns[index]
        if turn.hold and index not in self._held:
            self._held.add(index)
            await anyio.to_thread.run_sync(self._released.wait, WAIT_S)
        content = [
            {**b, "id": f"toolu_{index:02d}_{i}"} if b["type"] == "tool_use" else b for i, b in enumerate(turn.content)
        ]
        return JSONResponse(self.reply(body, f"{index:02d}", content))

    def _turn_for(self, messages: list[Block]) -> int:
        key = json.dumps(messages, sort_keys=True)
        with self._changed:
            return self._served.setdefault(key, len(self._served))

    @staticmethod
    def reply(body: Block, suffix: str, content: list[Block]) -> Block:
        uses = any(b["type"] == "tool_use" for b in content)
        return {
            "id": f"msg_fake_{suffix}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "tool_use" if uses else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(json.dumps(body)) // 4, "output_tokens": len(json.dumps(content)) // 4},
        }

    # -- the test side ----------------------------------------------------------

    def release(self) -> None:
        self._released.set()

    def wait_for_requests(self, count: int, timeout: float = WAIT_S) -> list[Block]:
        """Block until at least ``count`` requests arrived (bounded); all requests so far."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"expected {count} Messages API requests, got {len(self.requests)}")
            return list(self.requests)

    def turn_requests(self) -> list[Block]:
        """The requests that asked for a scripted turn (not the compaction ones)."""
        return [r for r in self.requests if (r.get("tool_choice") or {}).get("type") != "none"]


class ServedApi:
    """Runs a :class:`FakeMessagesApi` with uvicorn in a thread on a free 127.0.0.1 port.

    The socket is listening before uvicorn starts (connections wait in its backlog),
    and entering waits, bounded, for the app's lifespan startup.
    """

    def __init__(self, api: FakeMessagesApi) -> None:
        self.api = api
        self.ready = threading.Event()
        app = Starlette(routes=[Route("/v1/messages", api.messages, methods=["POST"])], lifespan=self._lifespan)
        config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="none", access_log=False)
        self.server = uvicorn.Server(config)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.ready.set()
        yield

    def __enter__(self) -> FakeMessagesApi:
        self.thread.start()
        if not self.ready.wait(WAIT_S):
            raise RuntimeError("the fake Messages API server did not start")
        self.api.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        return self.api

    def __exit__(self, *exc: object) -> None:
        self.api.release()
        self.server.should_exit = True
        self.thread.join(timeout=WAIT_S)
        self.sock.close()
