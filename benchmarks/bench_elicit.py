"""Throughput of ``verbcal elicit``'s engine with the durable store on, and where its time goes.

A local aiohttp server (in its own process) answers every chat completion after 50 ms;
2,000 items go through the ``openai`` backend at concurrency 32 with the SQLite store on,
once over each HTTP path (``--http lean``: aiohttp; ``--http sdk``: the official SDK).
The ideal rate is concurrency / latency = 640 requests/s; the goal is >= 0.85 of it.
The timed span is the whole ``elicit()`` call (planning, requests, a store commit per
reply, parsing, the output file) after the libraries have been imported.

The time split of each run: client CPU (CPU seconds of this process during the call: the
server runs in another process), of which the store (each reply's SQLite commit) and the
parse (reply text to distribution as each reply arrives, then the output records); the
rest is HTTP and the engine. In wall time: the span with requests in flight, and the
planning before it and the output after it.

References measured in the same run against the same server: a bare aiohttp client and
the bare ``AsyncOpenAI`` client (no store, no parsing), the ceilings of the two paths.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LATENCY = 0.05
PROMPT = [{"role": "user", "content": "Classify the sentiment of the review. " * 8}]


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


class Timer:
    """Seconds spent inside wrapped functions (wall clock; they do not await)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


@contextmanager
def instrumented() -> Iterator[dict[str, Timer]]:
    """Time the store commits and the parsing of ``elicit()`` (restored afterwards)."""
    from verbcal.elicit import engine as engine_module
    from verbcal.elicit import job as job_module
    from verbcal.elicit import store as store_module

    timers = {"store": Timer(), "parse": Timer(), "engine": Timer()}
    engine_run = engine_module.Engine.run

    async def timed_run(self: Any, jobs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await engine_run(self, jobs)
        finally:
            timers["engine"].seconds += time.perf_counter() - start

    saved = store_module.Store.put, job_module.parse_row, job_module.build_record
    store_module.Store.put = timers["store"].wrap(saved[0])  # type: ignore[method-assign]
    job_module.parse_row = timers["parse"].wrap(saved[1])  # type: ignore[assignment]
    job_module.build_record = timers["parse"].wrap(saved[2])  # type: ignore[assignment]
    engine_module.Engine.run = timed_run  # type: ignore[method-assign]
    try:
        yield timers
    finally:
        engine_module.Engine.run = engine_run  # type: ignore[method-assign]
        store_module.Store.put = saved[0]  # type: ignore[method-assign]
        job_module.parse_row, job_module.build_record = saved[1:]  # type: ignore[assignment]


def elicit_once(port: int, n_items: int, concurrency: int, http: str) -> dict[str, float]:
    """One timed ``elicit()`` of ``n_items``: rate, ratio to ideal and the time split."""
    from verbcal.elicit import ElicitOptions, elicit
    from verbcal.task import Task

    task = Task(
        name="bench",
        labels=("positive", "negative"),
        descriptions={},
        instruction="Classify the sentiment of the review.",
    )
    items = [{"id": f"i{n}", "text": f"review number {n}", "label": None} for n in range(n_items)]
    with tempfile.TemporaryDirectory() as tmp:
        opts = ElicitOptions(
            backend="openai",
            model="bench",
            base_url=f"http://127.0.0.1:{port}/v1",
            store=Path(tmp) / "store.sqlite",
            concurrency=concurrency,
            http=http,
        )
        with instrumented() as timers:
            cpu, start = time.process_time(), time.perf_counter()
            result = elicit(task, items, Path(tmp) / "out.jsonl", opts, progress=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert result.stats.requests == n_items and result.status_counts["ok"] == n_items
    rate = n_items / seconds
    store, parse = timers["store"].seconds, timers["parse"].seconds
    return {
        "requests_per_s": round(rate, 1),
        "ratio_to_ideal": round(rate / (concurrency / LATENCY), 3),
        "seconds": round(seconds, 3),
        "client_cpu_s": round(cpu, 3),
        "store_s": round(store, 3),
        "parse_s": round(parse, 3),
        "http_and_engine_cpu_s": round(max(0.0, cpu - store - parse), 3),
        "requests_phase_s": round(timers["engine"].seconds, 3),
        "before_and_after_s": round(seconds - timers["engine"].seconds, 3),
        "client_cpu_us_per_request": round(cpu / n_items * 1e6),
    }


async def bare_rate(port: int, n_items: int, concurrency: int, http: str) -> float:
    """A reference client alone (no store or parsing): aiohttp or ``AsyncOpenAI``."""
    url = f"http://127.0.0.1:{port}/v1"
    remaining = iter(range(n_items))
    if http == "lean":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = json.dumps({"model": "bench", "messages": PROMPT})
        headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

        async def send() -> None:
            async with session.post(url + "/chat/completions", data=body, headers=headers) as r:
                json.loads(await r.read())

        close: Callable[[], Any] = session.close
    else:
        import openai

        client = openai.AsyncOpenAI(base_url=url, api_key="sk-bench", max_retries=0)

        async def send() -> None:
            await client.chat.completions.create(model="bench", messages=PROMPT)  # type: ignore[arg-type]

        close = client.close

    async def worker() -> None:
        for _ in remaining:
            await send()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    await close()
    return n_items / seconds


def run(n_items: int, concurrency: int) -> dict[str, Any]:
    """Both HTTP paths and both references, against one server process."""
    import aiohttp  # noqa: F401  (imported up front: import time is not throughput)
    import httpx  # noqa: F401
    import openai  # noqa: F401

    queue: Any = mp.Queue()
    server = mp.Process(target=serve, args=(queue, LATENCY), daemon=True)
    server.start()
    load_start = os.getloadavg()[0]
    try:
        port = queue.get(timeout=30)
        os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-real-key")
        asyncio.run(bare_rate(port, 200, concurrency, "lean"))  # warm the server up
        numbers: dict[str, Any] = {}
        for http in ("lean", "sdk"):
            numbers[http] = elicit_once(port, n_items, concurrency, http)
            cpu = time.process_time()
            bare = asyncio.run(bare_rate(port, n_items, concurrency, http))
            cpu = time.process_time() - cpu
            numbers[http]["bare_client_requests_per_s"] = round(bare, 1)
            numbers[http]["bare_client_cpu_us_per_request"] = round(cpu / n_items * 1e6)
            numbers[http]["ratio_to_bare_client"] = round(numbers[http]["requests_per_s"] / bare, 3)
    finally:
        server.kill()
        server.join(5)
    numbers["load_1min"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    numbers["cores"] = os.cpu_count()
    return numbers


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
        f" store on; ideal {ideal:.0f} requests/s; goal >= 0.85 of ideal"
    )
    names = {"lean": "--http lean (aiohttp)", "sdk": "--http sdk (AsyncOpenAI)"}
    for http, name in names.items():
        n = numbers[http]
        print(
            f"{name}: {n['requests_per_s']:.1f} requests/s, ratio to ideal"
            f" {n['ratio_to_ideal']:.3f}; bare client alone {n['bare_client_requests_per_s']:.1f}/s"
            f" (verbcal / bare = {n['ratio_to_bare_client']:.3f})"
        )
        print(
            f"  time split of {n['seconds']:.2f} s: client CPU {n['client_cpu_s']:.2f} s"
            f" ({n['client_cpu_us_per_request']} us a request; the bare client"
            f" {n['bare_client_cpu_us_per_request']} us) = store {n['store_s']:.2f} s"
            f" + parse {n['parse_s']:.2f} s + HTTP and engine {n['http_and_engine_cpu_s']:.2f} s;"
            f" requests in flight {n['requests_phase_s']:.2f} s, planning and output"
            f" {n['before_and_after_s']:.2f} s"
        )
    load = numbers["load_1min"]
    print(
        f"machine: {numbers['cores']} cores, 1-min load average {load['start']:.2f} at the start,"
        f" {load['end']:.2f} at the end (client and server share the cores; other processes"
        " lower every ratio)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
