"""Where a ``/v1/calibrate`` request's CPU time goes, measured in-process (no sockets, no client).

Calls the ASGI applications directly (``verbcal serve``'s app and the bare FastAPI app of
``bench_serve.py``) with the same request bodies as the benchmark, and prints microseconds of
CPU per request for each, plus the service with parts switched off (the log line; the row
cache) so the split is measured, not guessed. ``--profile [single|batch100]`` adds a cProfile
listing (internal time, the top entries) of the service's requests of that kind.

Usage: python benchmarks/profile_serve.py [--requests N] [--profile [single|batch100]] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

KEY = "vk-bench-0123456789abcdef"


def bare_app(answers: dict[str, bytes]) -> Any:
    """The bare reference of ``bench_serve.py``: read the body, answer constant bytes."""
    app = FastAPI()

    @app.post("/v1/calibrate")
    async def calibrate(request: Request) -> Response:
        body = await request.body()
        answer = answers["batch" if body.count(b'"probs"') > 1 else "single"]
        return Response(answer, media_type="application/json")

    return app


async def call(app: Any, body: bytes) -> tuple[int, bytes]:
    """One POST /v1/calibrate through the ASGI interface."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/calibrate",
        "raw_path": b"/v1/calibrate",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def _lifespan_start(app: Any) -> None:
    """Run the app's startup (the service logs "serving"; nothing else needed here)."""
    router = getattr(app, "router", None)
    if router is not None and getattr(router, "lifespan_context", None) is not None:
        app.state._lifespan = router.lifespan_context(app)
        await app.state._lifespan.__aenter__()


def per_request_us(app: Any, bodies: list[bytes], repeat: int) -> float:
    """CPU microseconds per request over ``repeat`` passes through ``bodies``."""

    async def loop() -> float:
        for body in bodies[:50]:  # warm up
            status, _ = await call(app, body)
            assert status == 200, (status, _)
        start = time.process_time()
        for _ in range(repeat):
            for body in bodies:
                await call(app, body)
        return (time.process_time() - start) / (repeat * len(bodies)) * 1e6

    return asyncio.run(loop())


def measure(requests: int, profile: str | None) -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_serve", Path(__file__).with_name("bench_serve.py")
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    from verbcal.serve import create_app
    from verbcal.serve.config import ServeConfig
    from verbcal.serve.observe import JsonHandler

    os.environ["VERBCAL_API_KEYS"] = KEY
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = bench.fit_calibrator(Path(tmp))
        workload = bench.Workload.recorded(seed=0)
        single = workload.bodies(1, 400)
        batch = workload.bodies(100, 40)

        def service(cache_rows: int | None = None, log: bool = True) -> Any:
            config = ServeConfig(
                calibrators={name: str(path) for name, path in paths.items()},
                rate_limit=None,
                max_items=1000,
                log_level="info" if log else "warning",
                **({} if cache_rows is None else {"cache_rows": cache_rows}),
            )
            return create_app(config)

        logger = logging.getLogger("verbcal.serve")
        null = JsonHandler(open(os.devnull, "w"))  # noqa: SIM115  (as `verbcal serve` logs)
        logger.handlers[:] = [null]
        logger.propagate = False

        first = service()
        answers = {
            "single": asyncio.run(call(first, single[0]))[1],
            "batch": asyncio.run(call(first, batch[0]))[1],
        }
        bare = bare_app(answers)
        variants = {"bare": bare, "verbcal": service(), "verbcal_no_log": service(log=False)}
        if "cache_rows" in ServeConfig.__dataclass_fields__:
            variants["verbcal_no_cache"] = service(cache_rows=0)
        for name, app in variants.items():
            logger.handlers[:] = [null]  # create_app may have installed a stderr handler
            logger.setLevel("WARNING" if name == "verbcal_no_log" else "INFO")  # one global logger
            results[f"us_single_{name}"] = round(per_request_us(app, single, requests // 400), 1)
            results[f"us_batch100_{name}"] = round(
                per_request_us(app, batch, max(1, requests // 4000)), 1
            )
        if profile:
            app = variants["verbcal"]
            logger.setLevel("INFO")
            profiler = cProfile.Profile()
            profiler.enable()
            per_request_us(app, batch if profile == "batch100" else single, max(1, requests // 400))
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
            results["profile"] = out.getvalue()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument(
        "--profile",
        nargs="?",
        const="single",
        choices=("single", "batch100"),
        help="add a cProfile listing of verbcal's single-item (default) or 100-item requests",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.requests, args.profile)
    if args.json:
        print(json.dumps({k: v for k, v in results.items() if not k.startswith("profile")}))
        return
    for key, value in results.items():
        if not key.startswith("profile"):
            print(f"{key:>28}: {value} µs CPU per request")
    if "profile" in results:
        print(results["profile"])


if __name__ == "__main__":
    main()
