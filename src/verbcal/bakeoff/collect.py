"""Collect every arm's replies: live arms through verbcal's elicit engine, recorded arms from files.

Live arms run one after another through :class:`verbcal.elicit.engine.Engine` with one
SQLite store for the whole bakeoff (default ``<out>/bakeoff.store.sqlite``): every reply is
committed as it arrives, and a second run sends only what the store lacks (resume). Each
arm keeps its own rate limits (``concurrency``, ``rpm``, ``tpm``). ``max_cost`` is a budget
over the whole bakeoff: each arm may spend what the arms before it left; an arm without a
known price cannot run under a budget. Numeric arms send exactly the requests (and store
keys) of ``verbcal elicit`` with the same task, model, temperature and samples.

Cost and latency come from the store (:meth:`verbcal.elicit.store.Store.usage`): the
tokens every request of the arm used, including those of earlier runs, priced by the
arm's ``price_per_1m_input/output`` or else verbcal's pricing table
(:mod:`verbcal.elicit.pricing`); latency is the time from a request's first attempt to its
stored reply (retries included).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rich.console import Console

from verbcal.bakeoff.config import Arm, BakeoffConfig, BakeoffError
from verbcal.bakeoff.formats import (
    TOP_LABEL_TEMPLATE,
    VERBAL_JSON_TEMPLATE,
    VERBAL_TEMPLATE,
    Parsed,
    VerbalParser,
    default_verbal_parser,
    parse_top_label,
    parse_verbal,
    spread,
    top_label_schema,
    verbal_phrases,
    verbal_schema,
)
from verbcal.elicit.backends import DEFAULT_MODELS, Request
from verbcal.elicit.batch.options import BatchOptions
from verbcal.elicit.engine import Engine, EngineStats, Job
from verbcal.elicit.job import (
    ElicitError,
    ElicitOptions,
    ElicitStopped,
    _endpoint,
    elicit,
    pending_requests,
    plan_requests,
)
from verbcal.elicit.pricing import Price, batch_price, load_prices, lookup
from verbcal.elicit.store import Row, Store, request_key
from verbcal.parse import parse_reply
from verbcal.task import Task, read_items

FloatArray = NDArray[np.float64]


@dataclass
class ArmReplies:
    """One arm's distributions over the labels, per item, with what they cost.

    ``probs`` has a row per item in ``ids`` (NaN where no usable reply); ``y`` the gold
    label index (-1 where none); ``spread`` the standard deviation across the arm's samples
    of the probability of the averaged distribution's top label (None for one sample).
    ``cost`` is USD for every stored request of the arm (None: no known price).
    """

    name: str
    labels: tuple[str, ...]
    ids: list[str]
    probs: FloatArray
    y: NDArray[np.int64]
    status: list[str]
    spread: FloatArray | None = None
    latencies: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    n_requests: int = 0
    cost: float | None = None
    price: Price | None = None
    issues: Counter[str] = field(default_factory=Counter)
    recorded: bool = False
    sent: int = 0
    cost_sent: float = 0.0
    """USD of the requests sent in this run (what counts against ``--max-cost``)."""

    @property
    def usable(self) -> NDArray[np.bool_]:
        """Items with a distribution."""
        return np.asarray(~np.isnan(self.probs).any(axis=1))

    @property
    def cost_per_1k(self) -> float | None:
        """USD per 1,000 items (None: recorded arm, or no known price)."""
        if self.cost is None or not self.ids:
            return None
        return 1000.0 * self.cost / len(self.ids)


@dataclass(frozen=True)
class ArmPlan:
    """The requests of one live arm: per item, the store keys of its samples."""

    arm: Arm
    model: str
    keys: list[tuple[str, ...]]
    jobs: dict[str, Job]
    price: Price | None


@dataclass(frozen=True)
class DryRunArm:
    """What one arm would send: requests, estimated tokens and cost (nothing sent)."""

    arm: str
    model: str
    recorded: bool
    n_items: int
    n_requests: int
    n_from_store: int
    input_tokens: int
    output_tokens_max: int
    cost_input: float | None
    cost_max: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------ planning


def arm_task(task: Task, arm: Arm, about: str) -> Task:
    """The task with the arm's prompt template (``{about}`` filled in), or its format's own."""
    template = arm.prompt
    if template is None and arm.reply == "top-label":
        template = TOP_LABEL_TEMPLATE
    if template is None and arm.reply == "verbal":
        template = VERBAL_JSON_TEMPLATE if arm.structured else VERBAL_TEMPLATE
    if template is None:
        return task
    return dataclasses.replace(task, template=template.replace("{about}", about))


def arm_options(arm: Arm, prices: str | None) -> ElicitOptions:
    """The elicit options of a live arm (backend, model, limits, samples, temperature)."""
    return ElicitOptions(
        backend=arm.backend or "openai",
        model=arm.model,
        base_url=arm.base_url,
        concurrency=arm.concurrency,
        rpm=arm.rpm,
        tpm=arm.tpm,
        samples=arm.samples,
        temperature=arm.temperature,
        max_tokens=arm.max_tokens,
        structured=arm.structured,
        prices=prices,
    )


def plan_arm(
    config: BakeoffConfig, arm: Arm, items: Sequence[dict[str, Any]], prices: dict[str, Price]
) -> ArmPlan:
    """Every request of a live arm, keyed as the store keys it.

    An arm run by ``verbcal elicit`` (:attr:`Arm.via_elicit`: batch, decision model) gets
    elicit's own plan (:func:`verbcal.elicit.job.plan_requests`), so its keys are those
    ``verbcal elicit`` stores."""
    opts = arm_options(arm, None)
    model = arm.model or DEFAULT_MODELS[opts.backend]
    if arm.via_elicit:
        return _elicit_plan(config, arm, items, prices)
    task = arm_task(config.task, arm, config.about(arm))
    temp = arm.temperature
    params: dict[str, Any] = {
        "temperature": temp,
        "max_tokens": arm.max_tokens,
        "structured": opts.structured,
    }
    schema = None
    if arm.reply == "numeric":
        schema = task.json_schema() if opts.structured else None
    else:
        params["reply"] = arm.reply
        if arm.reply == "top-label" and opts.structured:
            schema = top_label_schema(task.labels)
        if arm.reply == "verbal" and opts.structured:
            schema = verbal_schema(verbal_phrases())
    keys: list[tuple[str, ...]] = []
    jobs: dict[str, Job] = {}
    for item in items:
        prompt = task.render_prompt(str(item["text"]), item)
        item_keys = []
        for sample in range(arm.samples):
            key = request_key(opts.backend, model, prompt, params, sample)
            request = Request(prompt, schema, temp, arm.max_tokens, sample if temp > 0 else None)
            jobs.setdefault(key, Job(key, str(item["id"]), sample, request))
            item_keys.append(key)
        keys.append(tuple(item_keys))
    return ArmPlan(arm, model, keys, jobs, _arm_price(arm, opts.backend, model, prices))


def _arm_price(arm: Arm, backend: str, model: str, prices: dict[str, Price]) -> Price | None:
    if arm.price is not None:
        return arm.price
    return (0.0, 0.0) if backend == "local" else lookup(model, prices)


def _elicit_plan(
    config: BakeoffConfig, arm: Arm, items: Sequence[dict[str, Any]], prices: dict[str, Price]
) -> ArmPlan:
    opts = arm_options(arm, None)
    model = arm.model or DEFAULT_MODELS[opts.backend]
    task = arm_task(config.task, arm, config.about(arm))
    try:
        item_plans, jobs = plan_requests(task, items, opts, model)
    except ElicitError as exc:
        raise BakeoffError(f"{config.source}, arm {arm.name!r}: {exc}") from None
    keys = [plan.keys for plan in item_plans]
    price = _arm_price(arm, opts.backend, model, prices)
    if arm.batch:  # the provider's batch API charges a share of the live price
        price = batch_price(price)
    return ArmPlan(arm, model, keys, jobs, price)


def load_items(config: BakeoffConfig) -> list[dict[str, Any]]:
    """The items of the live arms, each with its gold label (an error names what lacks one)."""
    assert config.doc.items is not None
    task = config.task
    path = config.path(config.doc.items)
    if task.label_field is None:
        raise BakeoffError(
            f"{config.source}: the task {config.doc.task} has no label_field, so the items"
            " carry no gold labels; add 'label_field: label' to the task"
        )
    items = read_items(path, task)
    missing = [item["id"] for item in items if item["label"] is None]
    if missing:
        raise BakeoffError(
            f"{path}: {len(missing)} items have no gold label (first: {missing[0]!r}); a"
            " bakeoff scores every arm against gold labels: label them or remove them"
        )
    return items


def default_store(out: str | Path) -> Path:
    """The bakeoff's store: ``<out>/bakeoff.store.sqlite``."""
    return Path(out) / "bakeoff.store.sqlite"


# ------------------------------------------------------------------------------ dry run


def dry_run(
    config: BakeoffConfig, out: str | Path, store: str | Path | None = None
) -> list[DryRunArm]:
    """Per arm: requests still to send, estimated tokens and cost. Sends nothing."""
    prices = load_prices(config.path(config.doc.prices) if config.doc.prices else None)
    items = load_items(config) if any(not a.is_recorded for a in config.arms) else []
    store_path = Path(store) if store else _store_path(config, out)
    rows = []
    for arm in config.arms:
        if arm.is_recorded:
            rows.append(DryRunArm(arm.name, "recorded", True, 0, 0, 0, 0, 0, 0.0, 0.0))
            continue
        plan = plan_arm(config, arm, items, prices)
        pending = pending_requests(plan.jobs, store_path, plan.price)
        rows.append(
            DryRunArm(
                arm.name,
                plan.model,
                False,
                len(items),
                len(plan.jobs),
                pending.n_from_store,
                pending.input_tokens,
                pending.output_tokens_max,
                pending.cost_input,
                pending.cost_max,
            )
        )
    return rows


def _store_path(config: BakeoffConfig, out: str | Path) -> Path:
    if config.doc.store:
        return Path(config.path(config.doc.store))
    return default_store(out)


# ------------------------------------------------------------------------------ collecting


def collect(
    config: BakeoffConfig,
    out: str | Path,
    *,
    max_cost: float | None = None,
    store: str | Path | None = None,
    verbal_parser: VerbalParser | None = None,
    console: Console | None = None,
) -> dict[str, ArmReplies]:
    """Every arm's replies, by arm name, in config order.

    Raises :class:`verbcal.elicit.ElicitStopped` when ``max_cost`` is reached or a backend
    answers 401/403/404 (every reply received is kept in the store: re-run to resume), and
    :class:`BakeoffError` for what the config cannot do (a verbal arm without a lexicon, a
    budget for an arm without a price).
    """
    parser = _verbal_parser(config, verbal_parser)
    prices = load_prices(config.path(config.doc.prices) if config.doc.prices else None)
    live = [arm for arm in config.arms if not arm.is_recorded]
    items = load_items(config) if live else []
    plans = {arm.name: plan_arm(config, arm, items, prices) for arm in live}
    if max_cost is not None:
        for plan in plans.values():
            if plan.price is None:
                raise BakeoffError(
                    f"--max-cost needs a price for arm {plan.arm.name!r} (model"
                    f" {plan.model!r}), which the pricing table lacks: give"
                    " price_per_1m_input and price_per_1m_output in the arm"
                )
    store_path = Path(store) if store else _store_path(config, out)
    result: dict[str, ArmReplies] = {}
    spent = 0.0
    with Store(store_path) as db:
        for arm in config.arms:
            if arm.is_recorded:
                result[arm.name] = read_recorded(config, arm, parser)
                continue
            plan = plans[arm.name]
            budget = None if max_cost is None else max(max_cost - spent, 0.0)
            if arm.via_elicit:
                replies = _run_elicited(config, plan, items, Path(out), store_path, budget, db)
                spent += replies.cost_sent
                result[arm.name] = replies
                continue
            stats = _run_arm(plan, db, store_path, budget, console)
            spent += stats.cost
            replies = _replies(config, plan, items, db, parser)
            replies.sent = stats.requests
            result[arm.name] = replies
    return result


def _verbal_parser(config: BakeoffConfig, given: VerbalParser | None) -> VerbalParser | None:
    if not any(arm.format == "verbal" for arm in config.arms):
        return given
    return given if given is not None else default_verbal_parser()


def _run_arm(
    plan: ArmPlan,
    db: Store,
    store_path: Path,
    budget: float | None,
    console: Console | None,
) -> EngineStats:
    done = {k for k, r in db.get_many(plan.jobs).items() if r.status != "error"}
    pending = [job for key, job in plan.jobs.items() if key not in done]
    if not pending:
        return EngineStats()
    opts = arm_options(plan.arm, None)
    if budget is not None:
        opts = dataclasses.replace(opts, max_cost=max(budget, 1e-12))
    if console is not None:
        console.print(
            f"arm {plan.arm.name}: {len(pending)} requests to {opts.backend}/{plan.model}",
            highlight=False,
        )
    with _endpoint(opts, console) as base_url:
        backend = opts.make_backend(plan.model, base_url)
        engine = Engine(backend, db, opts.engine_config(plan.price, None))

        async def drive() -> EngineStats:
            try:
                return await engine.run(pending)
            finally:
                await backend.aclose()

        stats = asyncio.run(drive())
    if engine.stop is not None:
        stored = db.get_many(plan.jobs)
        unsent = sum(1 for key in plan.jobs if key not in stored)
        raise ElicitStopped(engine.stop, opts.backend, store_path, stats.requests, unsent)
    return stats


def _run_elicited(
    config: BakeoffConfig,
    plan: ArmPlan,
    items: Sequence[dict[str, Any]],
    out: Path,
    store_path: Path,
    budget: float | None,
    db: Store,
) -> ArmReplies:
    """A batch or decision-model arm: ``verbcal elicit`` (with the bakeoff's store and what
    is left of the budget) writes ``<out>/arms/<name>.jsonl``, read here as a recorded arm
    is; tokens, cost and latency come from the store, as for the other live arms."""
    arm = plan.arm
    folder = out / "arms"
    folder.mkdir(parents=True, exist_ok=True)
    prices = config.path(config.doc.prices) if config.doc.prices else None
    if arm.price is not None:  # the arm's own price, for elicit's budget and cost
        own = folder / f"{arm.name}.prices.json"
        entry = {"input": arm.price[0], "output": arm.price[1]}
        own.write_text(json.dumps({plan.model: entry}), encoding="utf-8")
        prices = str(own)
    opts = dataclasses.replace(
        arm_options(arm, prices),
        store=store_path,
        max_cost=None if budget is None else max(budget, 1e-12),
        batch=BatchOptions() if arm.batch else None,
    )
    task = arm_task(config.task, arm, config.about(arm))
    path = folder / f"{arm.name}.jsonl"
    try:
        done = elicit(task, list(items), path, opts, progress=False)
    except ElicitError as exc:
        raise BakeoffError(f"{config.source}, arm {arm.name!r}: {exc}") from None
    records = {str(r["id"]): r for r in _read_jsonl(path)}
    labels = config.labels
    probs = np.full((len(items), len(labels)), np.nan)
    status: list[str] = []
    issues: Counter[str] = Counter()
    for i, item in enumerate(items):
        record = records.get(str(item["id"]), {})
        issues.update(str(issue).split(":")[0] for issue in record.get("issues") or ())
        row = record.get("probs")
        usable = record.get("status") not in (None, "error", "failed", "refused")
        if not usable or not isinstance(row, dict):
            status.append("failed")
            continue
        values = np.asarray([float(row.get(label, 0.0) or 0.0) for label in labels])
        if values.sum() <= 0:
            status.append("failed")
            continue
        probs[i] = values / values.sum()
        status.append(str(record["status"]))
    replies = _live_replies(config, plan, items, probs, status, issues, db)
    replies.sent, replies.cost_sent = done.stats.requests, done.cost or 0.0
    return replies


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _parse(config: BakeoffConfig, arm: Arm, row: Row, parser: VerbalParser | None) -> Parsed:
    labels = config.labels
    if row.status == "error":
        return Parsed("error", None, (f"request failed: {row.error}",))
    text = row.raw or ""
    if arm.reply == "numeric":
        parsed = parse_reply(text, labels)
        return Parsed(parsed.status, parsed.probs, tuple(parsed.issues))
    if arm.reply == "top-label":
        return parse_top_label(text, labels)
    assert parser is not None
    return parse_verbal(text, labels, config.about(arm), parser)


def _replies(
    config: BakeoffConfig,
    plan: ArmPlan,
    items: Sequence[dict[str, Any]],
    db: Store,
    parser: VerbalParser | None,
) -> ArmReplies:
    labels = config.labels
    rows = db.get_many(plan.jobs)
    k = len(labels)
    probs = np.full((len(items), k), np.nan)
    spreads = np.full(len(items), np.nan) if plan.arm.samples > 1 else None
    status: list[str] = []
    issues: Counter[str] = Counter()
    for i, keys in enumerate(plan.keys):
        samples = []
        for key in keys:
            row = rows.get(key)
            parsed = (
                Parsed("error", None, ("no reply stored",))
                if row is None
                else _parse(config, plan.arm, row, parser)
            )
            issues.update(issue.split(":")[0] for issue in parsed.issues)
            if parsed.probs is not None and parsed.status != "failed":
                samples.append([parsed.probs.get(label, 0.0) for label in labels])
        if not samples:
            status.append("failed")
            continue
        matrix = np.asarray(samples, dtype=np.float64)
        matrix /= matrix.sum(axis=1, keepdims=True)
        mean = matrix.mean(axis=0)
        probs[i] = mean
        if spreads is not None:
            spreads[i] = float(np.std(matrix[:, int(np.argmax(mean))]))
        status.append("ok" if len(samples) == len(keys) else "partial")
    replies = _live_replies(config, plan, items, probs, status, issues, db)
    replies.spread = spreads
    return replies


def _live_replies(
    config: BakeoffConfig,
    plan: ArmPlan,
    items: Sequence[dict[str, Any]],
    probs: FloatArray,
    status: list[str],
    issues: Counter[str],
    db: Store,
) -> ArmReplies:
    """A live arm's replies with what its stored requests cost (tokens, USD, latencies)."""
    labels = config.labels
    used = list(db.usage(plan.jobs).values())
    tokens_in = sum(u.input_tokens for u in used)
    tokens_out = sum(u.output_tokens for u in used)
    cost = None
    if plan.price is not None:
        cost = (tokens_in * plan.price[0] + tokens_out * plan.price[1]) / 1e6
    return ArmReplies(
        name=plan.arm.name,
        labels=labels,
        ids=[str(item["id"]) for item in items],
        probs=probs,
        y=np.asarray([labels.index(item["label"]) for item in items], dtype=np.int64),
        status=status,
        latencies=[s for u in used if u.status != "error" and (s := u.seconds) is not None],
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        n_requests=len(used),
        cost=cost,
        price=plan.price,
        issues=issues,
    )


# ------------------------------------------------------------------------------ recorded


def read_recorded(config: BakeoffConfig, arm: Arm, parser: VerbalParser | None) -> ArmReplies:
    """A recorded arm: a JSONL file with ``id``, ``label`` (gold) and ``probs`` or ``verbal``.

    ``probs`` is a mapping label → number (normalised here; labels it lacks count 0);
    ``verbal`` a phrase about the record's ``about`` label (else the arm's ``about``, else
    the decision's positive label), read by the verbal parser (the lexicon).
    """
    assert arm.recorded is not None
    from verbcal import datasets

    spec = config.path(arm.recorded)
    try:
        path = datasets.resolve(spec)
    except ValueError as exc:
        raise BakeoffError(f"{config.source}, arm {arm.name!r}, field 'recorded': {exc}") from None
    labels = config.labels
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BakeoffError(
            f"{config.source}, arm {arm.name!r}, field 'recorded': cannot read {path} ({exc})"
        ) from None
    ids: list[str] = []
    gold: list[int] = []
    rows: list[list[float] | None] = []
    status: list[str] = []
    issues: Counter[str] = Counter()
    field_name = "probs" if arm.source == "probs" else "verbal"
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise BakeoffError(
                f"{where}: not valid JSON ({exc}); write one object a line"
            ) from None
        if not isinstance(record, dict) or "id" not in record:
            raise BakeoffError(f"{where}, field 'id': missing; give every record an id")
        label = record.get("label")
        if label not in labels:
            raise BakeoffError(
                f"{where}, field 'label': gold label {label!r} is not one of {list(labels)};"
                " a bakeoff needs a gold label on every record"
            )
        if field_name not in record:
            raise BakeoffError(
                f"{where}, field {field_name!r}: missing (the arm reads 'source: {arm.source}')"
            )
        ids.append(str(record["id"]))
        gold.append(labels.index(label))
        parsed = _recorded_reply(record[field_name], arm, record, config, parser)
        issues.update(issue.split(":")[0] for issue in parsed.issues)
        if parsed.probs is None or parsed.status == "failed":
            rows.append(None)
            status.append("failed")
        else:
            rows.append([parsed.probs.get(name, 0.0) for name in labels])
            status.append(parsed.status)
    probs = np.full((len(ids), len(labels)), np.nan)
    for i, row in enumerate(rows):
        if row is not None and sum(row) > 0:
            probs[i] = np.asarray(row) / sum(row)
    return ArmReplies(
        name=arm.name,
        labels=labels,
        ids=ids,
        probs=probs,
        y=np.asarray(gold, dtype=np.int64),
        status=status,
        issues=issues,
        recorded=True,
    )


def _recorded_reply(
    value: Any,
    arm: Arm,
    record: dict[str, Any],
    config: BakeoffConfig,
    parser: VerbalParser | None,
) -> Parsed:
    labels = config.labels
    if arm.source == "probs":
        if not isinstance(value, dict):
            return Parsed("failed", None, ("not_an_object",))
        try:
            probs = {name: float(value.get(name, 0.0) or 0.0) for name in labels}
        except (TypeError, ValueError):
            return Parsed("failed", None, ("bad_value",))
        if any(v < 0 for v in probs.values()) or sum(probs.values()) <= 0:
            return Parsed("failed", None, ("bad_value",))
        return Parsed("ok", probs)
    assert parser is not None
    about = record.get("about") or config.about(arm)
    if about not in labels:
        return Parsed("failed", None, (f"unknown_about:{about}",))
    if not isinstance(value, str):
        return Parsed("failed", None, ("not_a_phrase",))
    return parse_verbal(value, labels, about, parser)


__all__ = [
    "ArmPlan",
    "ArmReplies",
    "DryRunArm",
    "arm_options",
    "arm_task",
    "collect",
    "default_store",
    "dry_run",
    "load_items",
    "plan_arm",
    "read_recorded",
    "spread",
]
