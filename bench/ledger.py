"""Ledger benchmark: durable append throughput, and slice latency as a session grows.

    .venv/bin/python bench/ledger.py [--appends 20000] [--sizes 10000,100000,1000000]

Append: concurrent appenders on one session through ``Ledger.append`` (the same
path the pipeline and the HTTP API use), WAL with synchronous=NORMAL, each append
acknowledged only after its transaction committed.

Slice: a session is filled to each size (bulk-loaded with a valid hash chain),
then 100-event slices are read from random positions in the middle half
(``Ledger.read`` with ``after=`` and ``limit=100``), p50/p99 reported per size.
Not a test: prints a Markdown table; results go in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.db import Database  # noqa: E402
from gateway.ledger import GENESIS, SCHEMA, Ledger, Slice, canonical, chain_hash, now_ts  # noqa: E402


async def bench_appends(db: Database, total: int, concurrency: int, tag: int) -> float:
    ledger = Ledger(db)
    session_id = f"ses_append_{tag}"
    per_worker = total // concurrency

    async def worker(w: int) -> None:
        for i in range(per_worker):
            await ledger.append(session_id, "agent.message", {"w": w, "i": i, "text": "x" * 100})

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    assert await ledger.last_seq(session_id) == per_worker * concurrency
    return per_worker * concurrency / elapsed


def bulk_fill(db: Database, session_id: str, count: int, chunk: int = 20_000) -> None:
    state = {"seq": 0, "prev": GENESIS}
    while state["seq"] < count:
        rows = []
        for _ in range(min(chunk, count - int(state["seq"]))):
            seq = int(state["seq"]) + 1
            ts, data = now_ts(), canonical({"i": seq, "text": "y" * 100})
            digest = chain_hash(str(state["prev"]), session_id, seq, "agent.message", ts, data)
            rows.append((session_id, seq, "agent.message", ts, data, digest))
            state["seq"], state["prev"] = seq, digest
        db.write_sync(lambda c, rows=rows: c.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows))


async def bench_slices(db: Database, session_id: str, size: int, reads: int) -> tuple[float, float]:
    ledger = Ledger(db)
    rng = random.Random(size)
    times = []
    for _ in range(reads):
        after = rng.randint(size // 4, 3 * size // 4)
        started = time.perf_counter()
        events = await ledger.read(session_id, Slice(after=after, limit=100))
        times.append((time.perf_counter() - started) * 1000)
        assert len(events) == 100 and events[0].seq == after + 1
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--appends", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--reads", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "bench.db", [SCHEMA])
        print("| measure | value | goal |\n|---|---|---|")
        for concurrency in (1, args.concurrency):
            rate = await bench_appends(db, args.appends // (10 if concurrency == 1 else 1), concurrency, concurrency)
            print(f"| durable appends/s ({concurrency} concurrent appender(s), one session) | {rate:,.0f} | >= 5,000 |")
        filled = 0
        for size in (int(s) for s in args.sizes.split(",")):
            started = time.perf_counter()
            bulk_fill(db, f"ses_{size}", size)
            filled += size
            p50, p99 = await bench_slices(db, f"ses_{size}", size, args.reads)
            print(
                f"| 100-event slice from the middle, {size:,}-event session: p50 / p99 ms "
                f"| {p50:.3f} / {p99:.3f} | p50 < 2 ms, flat |"
            )
            print(f"<!-- filled {size:,} events in {time.perf_counter() - started:.1f} s -->", file=sys.stderr)
        db.close()


if __name__ == "__main__":
    asyncio.run(main())
