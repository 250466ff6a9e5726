"""Turn stored rows into output records: parse, average samples, write JSONL in input order."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verbcal.elicit.store import Row
from verbcal.lexicon import parse_verbal
from verbcal.parse import ParsedReply, parse_reply


@dataclass(frozen=True)
class ItemPlan:
    """One input item and the store keys of its samples (and of its logprob request)."""

    item: dict[str, Any]
    keys: tuple[str, ...]
    logprob_key: str | None = None
    provenance: dict[str, Any] | None = None
    """Where the probabilities come from (``verbcal.elicit.job.provenance``), per record."""


Parsed = Mapping[str, ParsedReply]
"""Replies parsed as they arrived, by store key (so the output need not parse them again)."""


def parse_text(raw: str, labels: Sequence[str], about: str | None = None) -> ParsedReply:
    """A reply read as a JSON distribution, or (``about`` given: a ``reply: verbal`` task) as
    a phrase through the lexicon, P(about) = its value (:func:`verbcal.lexicon.parse_verbal`)."""
    if about is None:
        return parse_reply(raw, labels)
    reply = parse_verbal(raw, about=about, labels=labels)
    probs = None if reply.p is None else reply.probs(labels, about)
    return ParsedReply(reply.status, probs, list(reply.issues))


def parse_row(row: Row, labels: Sequence[str], about: str | None = None) -> ParsedReply | None:
    """The parsed text of a stored reply; None for errors and label-logprob rows."""
    if row.status == "error" or row.logprobs is not None or row.mode in ("logprobs", "decision"):
        return None
    return parse_text(row.raw or "", labels, about)


def row_status(row: Row, parsed: ParsedReply | None) -> str:
    """The status one stored row counts as on the progress bar."""
    if row.status == "error":
        return "error"
    if row.mode == "decision":
        return str(decision_reply(row)[0])
    return "logprobs" if parsed is None else parsed.status


def decision_reply(row: Row) -> tuple[str, dict[str, float] | None, list[str]]:
    """Status, distribution and issues of a decision-model reply (stored already read)."""
    try:
        data = json.loads(row.raw or "")
        return str(data["status"]), data["probs"], list(data["issues"])
    except (ValueError, KeyError, TypeError) as exc:
        return "failed", None, [f"unreadable stored decision: {exc}"]


def _single(
    row: Row | None, labels: Sequence[str], parsed: Parsed, about: str | None = None
) -> tuple[str, dict[str, float] | None, list[str]]:
    if row is None:
        return "error", None, ["no reply stored (the run was interrupted); re-run to resume"]
    if row.status == "error":
        return "error", None, [f"request failed: {row.error}"]
    if row.mode == "decision":
        return decision_reply(row)
    result = parsed.get(row.key) or parse_text(row.raw or "", labels, about)
    return result.status, result.probs, list(result.issues)


def _combine(
    results: list[tuple[str, dict[str, float] | None, list[str]]], labels: Sequence[str]
) -> tuple[str, dict[str, float] | None, list[str]]:
    """Average the usable samples; ``ok`` only if every sample was clean."""
    usable = [probs for status, probs, _ in results if probs is not None and status != "failed"]
    issues = [f"sample {i}: {issue}" for i, (_, _, found) in enumerate(results) for issue in found]
    if not usable:
        every_error = all(status == "error" for status, _, _ in results)
        return ("error" if every_error else "failed"), None, issues
    if len(usable) < len(results):
        issues.append(f"{len(results) - len(usable)} of {len(results)} samples unusable")
    mean = {label: sum(p.get(label, 0.0) for p in usable) / len(usable) for label in labels}
    clean = all(status == "ok" for status, _, _ in results)
    return ("ok" if clean else "repaired"), mean, issues


def softmax_logprobs(
    scores: dict[str, float] | None, labels: Sequence[str]
) -> dict[str, float] | None:
    """Label probabilities from first-token log-probabilities (unlisted labels get 0)."""
    if not scores:
        return None
    top = max(scores.values())
    weights = {label: math.exp(scores[label] - top) if label in scores else 0.0 for label in labels}
    total = sum(weights.values())
    return {label: weight / total for label, weight in weights.items()}


def build_record(
    plan: ItemPlan,
    rows: dict[str, Row],
    labels: Sequence[str],
    parsed: Parsed | None = None,
    about: str | None = None,
) -> dict[str, Any]:
    """The output record of one item: id, probs, label, status, issues, raw (+ extras).

    With ``about`` (a ``reply: verbal`` task) the record also keeps the phrase as written
    (``verbal``) and ``about``; ``probs`` is the lexicon's reading of it."""
    found = [rows.get(key) for key in plan.keys]
    results = [_single(row, labels, parsed or {}, about) for row in found]
    status, probs, issues = results[0] if len(results) == 1 else _combine(results, labels)
    raws = [row.raw if row is not None else None for row in found]
    record: dict[str, Any] = {"id": plan.item["id"], "probs": probs}
    if plan.item.get("label") is not None:
        record["label"] = plan.item["label"]
    if about is not None:
        phrases = [raw.strip() if isinstance(raw, str) else None for raw in raws]
        record.update(verbal=phrases[0] if len(phrases) == 1 else phrases, about=about)
    record.update(status=status, issues=issues, raw=raws[0] if len(raws) == 1 else raws)
    if len(results) > 1:
        record["sample_probs"] = [probs_i for _, probs_i, _ in results]
    if plan.provenance is not None:
        record["provenance"] = plan.provenance
    if plan.logprob_key is not None:
        lp_row = rows.get(plan.logprob_key)
        record["logprob_probs"] = softmax_logprobs(lp_row.logprobs if lp_row else None, labels)
    return record
