"""``verbcal serve``: fitted calibrators (and optionally an LLM classifier) over HTTP."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from verbcal.cli import options as opt
from verbcal.cli.app import app, print_error


@app.command("serve")
def serve_command(
    calibrator: Annotated[
        list[str],
        typer.Option(help="NAME=PATH of a calibrator from `verbcal fit` (repeat for several)."),
    ],
    task: Annotated[
        Path | None, typer.Option(help="Task spec (YAML): enables POST /v1/classify.")
    ] = None,
    backend: opt.Backend = None,
    model: opt.Model = None,
    base_url: opt.BaseUrl = None,
    store: Annotated[
        Path | None,
        typer.Option(
            help="SQLite store of LLM replies, a cache across restarts (default: memory)."
        ),
    ] = None,
    concurrency: opt.Concurrency = 8,
    rpm: opt.Rpm = None,
    classify_calibrator: Annotated[
        str | None, typer.Option(help="Calibrator for /v1/classify (default: the only one).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            help="One API key, or sha256:<hex> of one, per line (also: VERBCAL_API_KEYS)."
        ),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without API keys, even beyond loopback.")
    ] = False,
    rate_limit: Annotated[
        str,
        typer.Option(help="Per key (or client address): N/second, N/minute, N/hour; '' = none."),
    ] = "600/minute",
    max_items: Annotated[int, typer.Option(help="Most items (or tensor rows) per request.")] = 1000,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 1_048_576,
    cache_rows: Annotated[
        int,
        typer.Option(
            help="Calibrated rows cached per calibrator (0: no cache); cleared on reload."
        ),
    ] = 65_536,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_predictions: Annotated[
        Path | None,
        typer.Option(
            help="SQLite file logging every prediction served by /v1/calibrate and "
            "/v1/classify (fsynced before the answer); "
            "enables POST /v1/feedback, GET /v1/monitor/{model} and monitoring gauges."
        ),
    ] = None,
    monitor_reference: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH: labelled predictions the monitor compares model NAME against "
            "(shift tests, ATC, BBSE, alarms). Repeat per model."
        ),
    ] = None,
    monitor_window: Annotated[
        int, typer.Option(min=1, help="Logged predictions per monitoring window.")
    ] = 500,
) -> None:
    """Serve calibrators over HTTP: /v1/calibrate, /v1/classify, Open Inference Protocol v2, /metrics.

    Logs are JSON lines on stderr. SIGHUP or POST /v1/admin/reload re-reads the calibrator files.

    Keys come from VERBCAL_API_KEYS (comma-separated) or --api-keys-file.

    Example: verbcal serve --calibrator tweets=ts.json --port 8000
    """
    try:  # imported here so that the other commands work without the serve extra
        import uvicorn

        from verbcal.serve import ClassifyConfig, ServeConfig, create_app
        from verbcal.serve.config import (
            CONFIG_ENV,
            check_exposure,
            parse_calibrator_specs,
            read_api_keys,
        )
        from verbcal.serve.observe import log_config
        from verbcal.serve.registry import ReloadError
    except ImportError as exc:
        print_error(f"{exc}; run: pip install 'verbcal[serve]'")
        raise typer.Exit(2) from exc
    try:
        classify = None
        if task is not None:
            if backend is None:
                raise ValueError(
                    "--task needs --backend (openai, anthropic, bedrock, litellm or local)"
                )
            classify = ClassifyConfig(
                task=str(task),
                backend=backend,
                model=model,
                base_url=base_url,
                store=str(store) if store else None,
                concurrency=concurrency,
                rpm=rpm,
                calibrator=classify_calibrator,
            )
        config = ServeConfig(
            calibrators=parse_calibrator_specs(calibrator),
            classify=classify,
            api_keys_file=str(api_keys_file) if api_keys_file else None,
            no_auth=no_auth,
            rate_limit=rate_limit or None,
            max_items=max_items,
            max_body_bytes=max_body_bytes,
            cache_rows=cache_rows,
            log_level=log_level,
            log_predictions=str(log_predictions) if log_predictions else None,
            monitor_references=parse_calibrator_specs(monitor_reference or []),
            monitor_window=monitor_window,
        )
        check_exposure(host, len(read_api_keys(config)), no_auth)
        application = create_app(config)  # loads every file now: errors stop here, clearly
    except (ReloadError, ValueError, OSError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    logging = log_config(log_level)
    if workers > 1:  # each worker builds its own app from the configuration in the environment
        os.environ[CONFIG_ENV] = config.to_json()
        uvicorn.run(
            "verbcal.serve:create_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_config=logging,
            access_log=False,
        )
    else:
        uvicorn.run(application, host=host, port=port, log_config=logging, access_log=False)
