"""The bakeoff: prompts, reply formats, models and sampling compared on the same items,
after calibration, with their cost; and the cheapest set-up that meets the decision target.

:func:`run_bakeoff` = :func:`~verbcal.bakeoff.collect.collect` (every arm's replies, live
through the elicit engine or recorded) → :func:`~verbcal.bakeoff.score.align` (the items
every arm answered) → :func:`~verbcal.bakeoff.score.score_arms` (the same calibration and
test parts for every arm, paired bootstrap CIs) → :mod:`~verbcal.bakeoff.output`
(``bakeoff.json``, a calibrator per arm, ``bakeoff.md``, ``report.html``).

Modules, each importing only those before it: :mod:`~verbcal.bakeoff.config`,
:mod:`~verbcal.bakeoff.formats`, :mod:`~verbcal.bakeoff.collect`,
:mod:`~verbcal.bakeoff.score`, :mod:`~verbcal.bakeoff.output`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from verbcal.bakeoff.collect import ArmReplies, DryRunArm, collect, dry_run
from verbcal.bakeoff.config import Arm, BakeoffConfig, BakeoffError, Decision
from verbcal.bakeoff.formats import VerbalParser, parse_top_label, parse_verbal
from verbcal.bakeoff.output import arm_rows, bakeoff_document, markdown_table, write_outputs
from verbcal.bakeoff.score import DecisionSpec, Scores, align, fit_final, score_arms


@dataclass
class BakeoffResult:
    """What :func:`run_bakeoff` produced: the ``bakeoff.json`` content, scores, files."""

    document: dict[str, Any]
    scores: Scores
    replies: dict[str, ArmReplies]
    files: dict[str, Path]


def describe_arm(arm: Arm) -> dict[str, Any]:
    """The set-up columns of an arm's row: format, backend, model, samples, temperature."""
    if arm.is_recorded:
        return {"format": arm.format, "recorded": arm.recorded, "source": arm.source}
    return {
        "format": arm.format,
        "backend": arm.backend,
        "model": arm.model,
        "samples": arm.samples,
        "llm_temperature": arm.temperature,
        "custom_prompt": arm.prompt is not None,
        "batch": arm.batch,
    }


def run_bakeoff(
    config: BakeoffConfig,
    out: str | Path,
    *,
    calib_frac: float = 0.5,
    repeats: int = 20,
    seed: int = 0,
    n_boot: int = 1000,
    max_cost: float | None = None,
    store: str | Path | None = None,
    verbal_parser: VerbalParser | None = None,
    console: Console | None = None,
    html_report: bool = True,
) -> BakeoffResult:
    """Collect, align, score, recommend and write every output to ``out``.

    Raises :class:`BakeoffError` for what the config cannot do and
    :class:`verbcal.elicit.ElicitStopped` when a budget or a fatal backend error stops a
    live arm (its replies are kept in the store; re-run to resume).
    """
    if repeats < 1:
        raise BakeoffError("--repeats must be at least 1")
    if not 0.0 < calib_frac < 1.0:
        raise BakeoffError("--calib-frac must lie strictly between 0 and 1 (e.g. 0.5)")
    out = Path(out)
    replies = collect(
        config, out, max_cost=max_cost, store=store, verbal_parser=verbal_parser, console=console
    )
    labels = config.labels
    try:
        ids, y, probs, dropped = align(
            {n: r.probs for n, r in replies.items()},
            {n: r.ids for n, r in replies.items()},
            {n: r.y for n, r in replies.items()},
        )
    except ValueError as exc:
        raise BakeoffError(f"{config.source}: {exc}") from None
    if not ids:
        raise BakeoffError(
            f"{config.source}: no item has a usable reply from every arm (and a gold label);"
            " check each arm's failed replies"
        )
    spec = DecisionSpec(
        positive=labels.index(config.positive),
        precision=config.decision.precision,
        confidence=config.decision.confidence,
        metric=config.decision.metric,
    )
    try:
        scores = score_arms(
            probs,
            y,
            spec,
            calib_frac=calib_frac,
            repeats=repeats,
            seed=seed,
            n_boot=n_boot,
            method=config.doc.method,
            labels=labels,
        )
    except ValueError as exc:
        raise BakeoffError(f"{config.source}: {exc}") from None
    describe = {arm.name: describe_arm(arm) for arm in config.arms}
    rows = arm_rows(scores, replies, dropped, describe)
    document = bakeoff_document(rows, scores, labels, config.source)
    calibrators = {name: fit_final(probs[name], y, config.doc.method, labels) for name in probs}
    files = write_outputs(out, document, scores, calibrators, html_report=html_report)
    return BakeoffResult(document, scores, replies, files)


__all__ = [
    "Arm",
    "ArmReplies",
    "BakeoffConfig",
    "BakeoffError",
    "BakeoffResult",
    "Decision",
    "DecisionSpec",
    "DryRunArm",
    "Scores",
    "VerbalParser",
    "align",
    "collect",
    "describe_arm",
    "dry_run",
    "markdown_table",
    "parse_top_label",
    "parse_verbal",
    "run_bakeoff",
    "score_arms",
]
