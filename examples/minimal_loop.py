"""A minimal agent loop with the ``anthropic`` SDK, using keyhand's tools, vault and ledger.

The lines marked ``# keyhand`` are all it takes to plug keyhand into a loop you
already have. Run it with a gateway (``keyhand serve``) and an API key
(``keyhand keys create --name me``)::

    export ANTHROPIC_API_KEY=...  KEYHAND_API_KEY=...
    python examples/minimal_loop.py "Write hello.py that prints hello, run it, and show me the output"

Environment: ``KEYHAND_URL`` (default http://127.0.0.1:8765/mcp), ``KEYHAND_MODEL``
(default claude-sonnet-4-5), ``ANTHROPIC_BASE_URL`` for another Messages API server.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import anthropic

from gateway.client import KeyhandClient  # keyhand

MODEL = os.environ.get("KEYHAND_MODEL", "claude-sonnet-4-5")
URL = os.environ.get("KEYHAND_URL", "http://127.0.0.1:8765/mcp")


async def main(task: str) -> None:
    client = anthropic.AsyncAnthropic()
    async with KeyhandClient(URL, os.environ.get("KEYHAND_API_KEY")) as keyhand:  # keyhand
        print(f"session {keyhand.session_id}", file=sys.stderr)
        tools = await keyhand.tools()  # keyhand: the session's tools as Anthropic tool definitions
        messages: list[Any] = [{"role": "user", "content": task}]
        await keyhand.append("user.message", {"content": task})  # keyhand (optional): log the loop's messages
        for _ in range(20):
            response = await client.messages.create(model=MODEL, max_tokens=2048, tools=tools, messages=messages)
            messages.append({"role": "assistant", "content": response.content})
            await keyhand.append("agent.message", {"content": [b.model_dump() for b in response.content]})  # keyhand
            if response.stop_reason != "tool_use":
                print("".join(b.text for b in response.content if b.type == "text"))
                return
            results = await keyhand.run_tool_uses(response.content)  # keyhand: tool_use -> tool_result blocks
            messages.append({"role": "user", "content": results})


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "List the files in the workspace."))
