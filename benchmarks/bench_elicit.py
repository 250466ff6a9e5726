"""Throughput of ``verbcal elicit``'s engine with the durable store on.

A local aiohttp server (in its own process) answers every chat completion after 50 ms;
2,000 items go through the ``openai`` backend at concurrency 32 with the SQLite store on.
The ideal rate is concurrency / latency = 640 requests/s; the goal is >= 0.8 of it.
The timed span is the whole ``elicit()`` call (planning, requests, a store commit per
reply, the output file) after the SDK has been imported.

The same run also times the bare ``AsyncOpenAI`` client (no store, no parsing) against the
same server, as the reference the ratio ``ratio_to_bare_sdk`` is taken against.

Usage: python benchmarks/bench_elicit.py [--json] [--items N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LATENCY = 0.05


def serve(port_queue: Any, latency: float) -> None:
    """Run the fake OpenAI server until killed; report its port through the queue."""
    from aiohttp import web

    reply = json.dumps({"positive": 0.7, "negative": 0.3})

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency)
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "bench",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
            }
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def run(n_items: int, concurrency: int) -> dict[str, float]:
    """Elicit ``n_items`` through the fake server; return the achieved rate and its ratio."""
    import aiohttp  # noqa: F401  (imported up front: import time is not throughput)
    import httpx  # noqa: F401
    import openai  # noqa: F401

    from verbcal.elicit import ElicitOptions, elicit
    from verbcal.task import Task

    task = Task(
        name="bench",
        labels=("positive", "negative"),
        descriptions={},
        instruction="Classify the sentiment of the review.",
    )
    items = [{"id": f"i{n}", "text": f"review number {n}", "label": None} for n in range(n_items)]
    queue: Any = mp.Queue()
    server = mp.Process(target=serve, args=(queue, LATENCY), daemon=True)
    server.start()
    try:
        port = queue.get(timeout=30)
        os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-real-key")
        with tempfile.TemporaryDirectory() as tmp:
            opts = ElicitOptions(
                backend="openai",
                model="bench",
                base_url=f"http://127.0.0.1:{port}/v1",
                store=Path(tmp) / "store.sqlite",
                concurrency=concurrency,
            )
            start = time.perf_counter()
            result = elicit(task, items, Path(tmp) / "out.jsonl", opts, progress=False)
            seconds = time.perf_counter() - start
        sdk_rate = asyncio.run(bare_sdk_rate(port, n_items, concurrency))
    finally:
        server.kill()
        server.join(5)
    assert result.stats.requests == n_items and result.status_counts["ok"] == n_items
    rate = n_items / seconds
    ideal = concurrency / LATENCY
    return {
        "requests_per_s": round(rate, 1),
        "ratio_to_ideal": round(rate / ideal, 3),
        "sdk_requests_per_s": round(sdk_rate, 1),
        "ratio_to_bare_sdk": round(rate / sdk_rate, 3),
    }


async def bare_sdk_rate(port: int, n_items: int, concurrency: int) -> float:
    """Reference measured in the same run: the plain ``AsyncOpenAI`` client, no store or parsing."""
    import openai

    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-bench-not-a-real-key", max_retries=0
    )
    remaining = iter(range(n_items))
    prompt = [{"role": "user", "content": "Classify the sentiment of the review. " * 8}]

    async def worker() -> None:
        for _ in remaining:
            await client.chat.completions.create(model="bench", messages=prompt)  # type: ignore[arg-type]

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    await client.close()
    return n_items / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    numbers = run(args.items, args.concurrency)
    if args.json:
        print(json.dumps(numbers))
        return
    ideal = args.concurrency / LATENCY
    print(
        f"{args.items} items, concurrency {args.concurrency}, server latency {LATENCY * 1000:.0f} ms,"
        " store on"
    )
    print(f"achieved {numbers['requests_per_s']:.1f} requests/s; ideal {ideal:.0f}/s")
    print(f"ratio to ideal: {numbers['ratio_to_ideal']:.3f} (goal >= 0.8)")
    print(
        f"reference, same run: the bare AsyncOpenAI client (no store, no parsing) reached"
        f" {numbers['sdk_requests_per_s']:.1f} requests/s; verbcal / bare SDK ="
        f" {numbers['ratio_to_bare_sdk']:.3f}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {os.cpu_count()} cores, 1-min load average {load:.2f} at the end"
        " (other processes on few cores lower the ratio: client and server share them)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
