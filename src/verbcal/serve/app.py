"""``create_app(config)``: the FastAPI application (run it with uvicorn, gunicorn or granian)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic_core import to_json
from starlette.exceptions import HTTPException

import verbcal
from verbcal.calibration import CalibratorError
from verbcal.serve import decisions, monitoring, oip, wire
from verbcal.serve.auth import HEALTH_PATHS, KeyRing, RateLimiter
from verbcal.serve.cache import Row
from verbcal.serve.calibrate import (
    InputError,
    calibrate_json,
    calibrated,
    calibrated_items,
    checked_rows,
    field_error,
    item_rows,
    pick_model,
)
from verbcal.serve.config import ServeConfig, parse_rate, read_api_keys
from verbcal.serve.gate import Gate, error_content
from verbcal.serve.observe import Metrics, ensure_handler
from verbcal.serve.registry import Registry, ReloadError, Served
from verbcal.serve.schemas import (
    RAW_BODIES,
    CalibrateRequest,
    CalibrateResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    JSONBytes,
    ModelInfo,
    ModelList,
    parse_body,
    raw_body,
)

if TYPE_CHECKING:
    from verbcal.serve.classify import Classifier

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed JSON.",
        401: "Missing or wrong API key.",
        404: "Unknown model.",
        413: "Body larger than --max-body-bytes.",
        422: "Invalid input: each error names the item index and the field.",
        429: "Rate limit exceeded: see Retry-After.",
    }.items()
}


class Service:
    """The state behind the routes: config, calibrators, classifier, metrics, logger."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.classifier: Classifier | None = None
        if config.classify is not None:  # needs the elicit extra, so imported only when used
            from verbcal.serve.classify import Classifier

            self.classifier = Classifier(config.classify)
        self.registry = Registry(
            config.calibrators, check=self._check_classify, cache_rows=config.cache_rows
        )
        self.metrics = Metrics()
        self.metrics.watch_caches(self._cache_view)
        self.logger = ensure_handler(config.log_level)
        keys = KeyRing(read_api_keys(config))
        self.keys = keys if len(keys) and not config.no_auth else None
        rate = parse_rate(config.rate_limit)
        self.limiter = RateLimiter(*rate) if rate else None
        self.monitoring: monitoring.Monitoring | None = None
        self._versions: dict[tuple[str, float], str] = {}
        if config.log_predictions:
            log = monitoring.PredictionLog(config.log_predictions)
            self.monitoring = monitoring.Monitoring(
                log, config.monitor_references, window=config.monitor_window
            )
            for served in self.registry.models.values():
                if self.monitoring.reference(served) is not None:  # a bad file stops start-up
                    self.monitoring.warm(served)
            self.metrics.registry.register(monitoring.MonitorCollector(self))

    def version_of(self, served: Served) -> str:
        """The calibrator version logged with a prediction: sha256 prefix of its file."""
        key = (served.path, served.loaded_at)
        version = self._versions.get(key)
        if version is None:
            version = self._versions[key] = monitoring.file_version(served.path)
        return version

    def _check_classify(self, models: Mapping[str, Served]) -> None:
        if self.classifier is not None:
            self.classifier.check_labels(self.classify_model(models))

    def classify_model(self, models: Mapping[str, Served]) -> Served:
        assert self.classifier is not None
        return pick_model(models, self.classifier.config.calibrator)

    def _cache_view(self) -> list[tuple[str, int, int, int]]:
        models = self.registry.models
        return [
            (name, stats.hits, stats.misses, len(models[name].cache) if name in models else 0)
            for name, stats in self.registry.cache_stats.items()
        ]

    async def calibrate(self, body: CalibrateRequest) -> bytes:
        """The ``/v1/calibrate`` answer (JSON) for a validated body (raises InputError)."""
        self.check_count(len(body.items))
        served = pick_model(self.registry.models, body.model)
        matrix = checked_rows(served, item_rows(served, body.items))
        rows = calibrated(served, matrix)
        ids = [item.id for item in body.items]
        ids = await monitoring.log_served(self, served, ids, matrix, rows)
        return self.answer(served, ids, rows, body.accept_threshold, body.set_mass)

    async def fast_calibrate(self, raw: bytes) -> bytes | None:
        """``/v1/calibrate`` without the framework: the JSON answer, or None on any problem
        (the request then goes the framework's way, which gives the standard error)."""
        try:
            body = wire.BODY.decode(raw)
            self.check_count(len(body.items))
            served = pick_model(self.registry.models, body.model)
            texts = [bytes(item.probs) for item in body.items]
            rows = served.cache.calibrate_texts(
                texts, served.read_rows, served.calibrator.predict_proba
            )
        except (msgspec.DecodeError, InputError, CalibratorError):
            return None
        ids = [item.id for item in body.items]
        if self.monitoring is not None:
            ids = await monitoring.log_served(self, served, ids, served.read_rows(texts), rows)
        return self.answer(served, ids, rows, body.accept_threshold, body.set_mass)

    def answer(
        self,
        served: Served,
        ids: list[str | None],
        rows: list[Row],
        accept_threshold: float | None = None,
        set_mass: float | None = None,
    ) -> bytes:
        """The answer for calibrated rows, with the decisions asked for."""
        if accept_threshold is None and set_mass is None:
            answer = calibrate_json(served, ids, rows)
        else:
            items = calibrated_items(served, ids, rows, accept_threshold, set_mass)
            answer = to_json({"model": served.name, "method": served.method, "items": items})
        self.metrics.count_items(served.name, len(ids))
        return answer

    def check_count(self, n: int) -> None:
        if n > self.config.max_items:
            message = (
                f"{n} items, more than the limit of {self.config.max_items} (--max-items):"
                " split the request"
            )
            raise InputError([field_error(None, "items", message)], code="too_many_items")

    async def reload(self, source: str) -> Mapping[str, Served]:
        try:
            models = await self.registry.reload()
        except ReloadError as exc:
            self.metrics.reloads.labels("failed").inc()
            self.logger.error(
                "reload failed, the old calibrators keep serving",
                extra={"source": source, "errors": exc.errors},
            )
            raise
        self.metrics.reloads.labels("ok").inc()
        self.logger.info(
            "reloaded",
            extra={
                "source": source,
                "generation": self.registry.generation,
                "models": sorted(models),
            },
        )
        return models


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The service for ``config`` (default: ``ServeConfig.from_env()``, for ``--factory`` use)."""
    service = Service(config or ServeConfig.from_env())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service.classifier is not None:
            await service.classifier.start()
        hup = _on_sighup(service)
        service.logger.info(
            "serving",
            extra={
                "models": sorted(service.registry.models),
                "auth": service.keys is not None,
                "classify": service.classifier is not None,
            },
        )
        try:
            yield
        finally:
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if service.classifier is not None:
                await service.classifier.close()

    app = FastAPI(
        title="verbcal",
        version=verbcal.__version__,
        summary="Calibrated probabilities from verbalized LLM distributions, as a service.",
        lifespan=lifespan,
        docs_url=None,  # /docs is added by _add_docs, with its assets served from here
        redoc_url=None,  # ReDoc loads its script from a CDN: not served
    )
    app.state.service = service
    app.add_middleware(
        Gate,  # type: ignore[arg-type]
        keys=service.keys,
        limiter=service.limiter,
        max_body_bytes=service.config.max_body_bytes,
        metrics=service.metrics,
        logger=service.logger,
        known_paths=lambda: {getattr(r, "path", "") for r in app.routes},
        fast_routes={"/v1/calibrate": service.fast_calibrate},
    )
    _add_error_handlers(app, service)
    _add_docs(app)
    _add_routes(app, service)
    oip.add_routes(app, service)
    decisions.add_routes(app, service)
    monitoring.add_routes(app, service)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


DOCS_ASSETS = "/docs/assets"
"""Where the Swagger UI's script, stylesheet and icon are served (from ``swagger-ui-bundle``)."""


def _add_docs(app: FastAPI) -> None:
    """``/docs``: the Swagger UI with every asset served by this process (no CDN), so it
    works offline and behind a firewall. Without ``swagger-ui-bundle`` there is no /docs."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def _on_sighup(service: Service) -> bool:
    """Reload on SIGHUP where the loop can take signals (the main thread)."""

    def handle() -> None:
        task = asyncio.ensure_future(service.reload("SIGHUP"))
        task.add_done_callback(lambda t: t.exception())  # failures are logged by reload()

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handle)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError):
        return False
    return True


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["v1"])
    async def models() -> ModelList:
        """The calibrators being served, with their labels (the column order)."""
        return ModelList(
            models=[_info(s) for s in service.registry.models.values()],
            generation=service.registry.generation,
        )

    @app.post(
        "/v1/calibrate",
        response_model=CalibrateResponse,
        responses=ERRORS,
        tags=["v1"],
        openapi_extra=raw_body(CalibrateRequest),
    )
    async def calibrate(request: Request) -> Response:
        """Calibrate verbalized distributions with a fitted calibrator (as `verbcal apply` does)."""
        answer = await service.calibrate(await parse_body(request, CalibrateRequest))
        return Response(answer, media_type="application/json")

    if service.classifier is not None:
        classifier = service.classifier

        @app.post(
            "/v1/classify",
            response_model=ClassifyResponse,
            responses={
                **ERRORS,
                502: {"model": ErrorResponse, "description": "The LLM backend refused the run."},
            },
            tags=["v1"],
        )
        async def classify(body: ClassifyRequest) -> Response:
            """Ask the LLM for a distribution per text (store as cache), then calibrate it."""
            service.check_count(len(body.items))
            served = service.classify_model(service.registry.models)
            items = [
                {"id": item.id if item.id is not None else str(i), "text": item.text}
                for i, item in enumerate(body.items)
            ]
            before = classifier.llm_requests
            out, statuses = await classifier.classify(
                served, items, body.accept_threshold, body.set_mass
            )
            metrics = service.metrics
            metrics.llm_requests.inc(classifier.llm_requests - before)
            for status, count in statuses.items():
                metrics.classify_status.labels(status).inc(count)
            metrics.llm_errors.inc(statuses.get("error", 0))
            metrics.count_items(served.name, sum(1 for r in out if r["probs"] is not None))
            client_ids = [item.id for item in body.items]
            await monitoring.log_classified(service, served, client_ids, out)
            return JSONBytes({"model": served.name, "method": served.method, "items": out})

    @app.post(
        "/v1/admin/reload",
        response_model=ModelList,
        responses={
            **ERRORS,
            409: {
                "model": ErrorResponse,
                "description": "A file did not load; the old calibrators keep serving.",
            },
        },
        tags=["admin"],
    )
    async def reload() -> ModelList:
        """Re-read every calibrator file and swap them in at once (all or nothing)."""
        models = await service.reload("admin")
        return ModelList(
            models=[_info(s) for s in models.values()], generation=service.registry.generation
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            **ERRORS,
            200: {
                "content": {"text/plain": {"schema": {"type": "string"}}},
                "description": "Prometheus text format.",
            },
        },
        tags=["admin"],
    )
    async def metrics() -> Response:
        """Prometheus metrics: requests by route and status, latency, items, classify statuses."""
        registry = service.metrics.registry
        if service.monitoring is not None:  # its gauges compute: keep the loop free
            body = await asyncio.to_thread(generate_latest, registry)
        else:
            body = generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _info(served: Served) -> ModelInfo:
    return ModelInfo(
        name=served.name,
        method=served.method,
        labels=list(served.labels),
        path=served.path,
        loaded_at=served.loaded_at,
    )


def _add_error_handlers(app: FastAPI, service: Service) -> None:
    def reply(
        request: Request,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> JSONResponse:
        rid = getattr(request.state, "request_id", "-")
        content = error_content(request.url.path, status, code, message, rid, errors)
        return JSONResponse(content, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_located(e) for e in exc.errors()[:20]]
        if "json" not in request.headers.get("content-type", "json"):
            message = "the body is not JSON: send it with 'Content-Type: application/json'"
            return reply(request, 400, "not_json", message, errors)
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return reply(
                request, 400, "malformed_json", f"malformed JSON: {errors[0]['message']}", errors
            )
        return reply(request, 422, "invalid_input", _summary(errors), errors)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return reply(request, exc.status, exc.code, _summary(exc.errors), exc.errors)

    @app.exception_handler(ReloadError)
    async def reload_failed(request: Request, exc: ReloadError) -> JSONResponse:
        errors = [field_error(None, f"models.{name}", why) for name, why in exc.errors.items()]
        return reply(
            request,
            409,
            "reload_failed",
            "reload failed, the old calibrators keep serving: " + str(exc),
            errors,
        )

    if service.classifier is not None:
        from verbcal.serve.classify import UpstreamError

        @app.exception_handler(UpstreamError)
        async def upstream(request: Request, exc: UpstreamError) -> JSONResponse:
            service.metrics.llm_errors.inc()
            return reply(request, 502, "llm_unavailable", f"the LLM backend failed: {exc}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        return reply(request, exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", "-")
        service.logger.exception("internal error", extra={"request_id": rid})
        # Starlette answers an unhandled error from its outermost middleware, outside the
        # gate that adds X-Request-ID to every other answer: add it here
        return reply(
            request,
            500,
            "internal_error",
            "internal error: the log has the details under this request_id",
            headers={"X-Request-ID": rid},
        )


def _located(error: Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic error as ``items[3].probs.positive`` with item index and field."""
    loc = [p for p in error.get("loc", ()) if p != "body"]
    item = None
    if len(loc) >= 2 and loc[0] in ("items", "inputs") and isinstance(loc[1], int):
        item, rest = loc[1], loc[2:]
        field = ".".join(str(p) for p in rest) or None
        located = field_error(item, field, str(error.get("msg", "invalid")))
        if loc[0] != "items":
            located["loc"] = located["loc"].replace("items[", f"{loc[0]}[", 1)
        return located
    field = ".".join(str(p) for p in loc) or "body"
    return field_error(item, field, str(error.get("msg", "invalid")))


def _summary(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return "invalid input"
    first = f"{errors[0]['loc']}: {errors[0]['message']}"
    return first if len(errors) == 1 else f"{first} (and {len(errors) - 1} more)"


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema with the API-key schemes declared (health routes need no key)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in RAW_BODIES:  # bodies parsed by the routes themselves
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(model_schema.pop("$defs", {}))
            schemas[model.__name__] = model_schema
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        schema["security"] = [{"bearer": []}, {"apiKey": []}]
        for path in HEALTH_PATHS:
            for operation in schema["paths"].get(path, {}).values():
                operation["security"] = []
        app.openapi_schema = schema
    return app.openapi_schema
