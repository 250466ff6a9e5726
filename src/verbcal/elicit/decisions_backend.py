"""Decision-model backends: label probabilities read from a model's scores, not from its text.

Two wire formats, one idea: a task becomes one typed question about the item, and the
answer's probabilities are the distribution (no reply text, no parsing).

* ``openai-decisions``: the OpenAI Decisions API (``POST /v1/decisions``, the official SDK's
  ``client.decisions.create``), also served by SGLang, LiteLLM and ``verbcal serve``. A task
  asks one ``choice`` question (choices = labels, descriptions = label descriptions); a
  binary task with an ``about`` label asks a ``predicate`` question (P(about label)).
* ``systemone``: TypeSafe's System One API (``POST /v1/systemone``): ``state`` plus a map of
  named ``choice`` / ``noul`` questions; answers keyed by question name.

Each reply's text is JSON ``{"answer": <the answer as sent>, "probs": ..., "status": ...,
"issues": [...]}``: the raw answer is kept for audit, the distribution is over the task's
labels. A refusal (or, on System One, a missing answer) is status ``refused`` with no
distribution: kept and counted, never dropped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verbcal.elicit.backends import BackendError, Reply, Request, credentials_hint, status_error

DECISION_BACKENDS = ("openai-decisions", "systemone")
QUESTION_NAME = "label"
"""The name given to the one question asked per item."""
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class DecisionQuestion:
    """What to ask about an item: a ``choice`` over the labels, or a ``predicate`` on one."""

    kind: str  # "choice" or "predicate"
    instructions: str
    labels: tuple[str, ...]
    descriptions: tuple[tuple[str, str], ...] = ()
    about: str | None = None
    """The label a predicate question asks about (its probability is P(about))."""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (part of the request key and of each record's provenance)."""
        out: dict[str, Any] = {"kind": self.kind, "instructions": self.instructions}
        out["labels"] = list(self.labels)
        if self.descriptions:
            out["descriptions"] = dict(self.descriptions)
        if self.about is not None:
            out["about"] = self.about
        return out


def task_question(task: Any) -> DecisionQuestion:
    """The question for a task: ``predicate`` when it is binary and names an ``about`` label."""
    labels = tuple(task.labels)
    descriptions = tuple((k, v) for k, v in task.descriptions.items() if v)
    about = getattr(task, "about", None)  # judge tasks (issue 20) name the label asked about
    if about is not None:
        if len(labels) != 2 or about not in labels:
            raise BackendError(
                f"task {task.name!r}: 'about' must be one of the two labels {list(labels)}"
                f" for a predicate question (got {about!r})",
                retryable=False,
            )
        return DecisionQuestion("predicate", task.instruction, labels, descriptions, about)
    return DecisionQuestion("choice", task.instruction, labels, descriptions)


def estimate_chars(question: DecisionQuestion) -> int:
    """Characters the question adds to each request (for token and cost estimates)."""
    return len(json.dumps(question.describe()))


# --------------------------------------------------------------- answers -> distributions


def distribution(
    question: DecisionQuestion, scores: Mapping[str, float]
) -> tuple[str, dict[str, float] | None, list[str]]:
    """Status, the distribution over the labels and issues, from per-label probabilities.

    Labels the answer does not list get 0; values that are not labels are dropped; a total
    away from 1 is renormalised. Each such fix is an issue and makes the status
    ``repaired``; no usable mass is ``failed``.
    """
    issues: list[str] = []
    extra = sorted(k for k in scores if k not in question.labels)
    if extra:
        issues.append(f"answer has values that are not labels: {extra}")
    missing = [label for label in question.labels if label not in scores]
    if missing:
        issues.append(f"answer lacks labels {missing}: set to 0")
    probs = {label: float(scores.get(label, 0.0)) for label in question.labels}
    if any(not math.isfinite(p) or p < 0 for p in probs.values()):
        return "failed", None, [*issues, f"probabilities out of range: {probs}"]
    total = sum(probs.values())
    if total <= 0:
        return "failed", None, [*issues, "no probability on any label"]
    if abs(total - 1) > SUM_TOLERANCE:
        issues.append(f"probabilities summed to {total:.6g}: renormalised")
        probs = {k: v / total for k, v in probs.items()}
    return ("repaired" if issues else "ok"), probs, issues


def predicate_scores(question: DecisionQuestion, p: float) -> dict[str, float]:
    """P(about) = p, the other label 1 - p."""
    assert question.about is not None
    other = next(label for label in question.labels if label != question.about)
    return {question.about: p, other: 1.0 - p}


def read_answer(question: DecisionQuestion, answer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored reply: the answer as sent, and the status, distribution and issues it gives.

    Understands both wires: Decisions answers (``predicate`` ``probability``; ``choice``
    ``probabilities`` as ``[{value, probability}]``; ``refusal``) and System One answers
    (``noul``; ``choice`` ``probabilities`` as a map). None (no answer) is a refusal.
    """
    kind = None if answer is None else answer.get("type")
    if answer is None or kind == "refusal":
        return {"answer": answer, "status": "refused", "probs": None, "issues": ["refused"]}
    try:
        if kind in ("predicate", "noul") and question.kind == "predicate":
            p = float(answer["probability"] if kind == "predicate" else answer["noul"])
            scores = predicate_scores(question, p)
        elif kind == "choice" and question.kind == "choice":
            raw = answer["probabilities"]
            pairs = (
                raw.items()
                if isinstance(raw, Mapping)
                else ((e["value"], e["probability"]) for e in raw)
            )
            scores = {str(k): float(v) for k, v in pairs}
        else:
            raise ValueError(f"a {kind!r} answer to a {question.kind} question")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        issue = f"unreadable answer: {exc}"
        return {"answer": answer, "status": "failed", "probs": None, "issues": [issue]}
    status, probs, issues = distribution(question, scores)
    return {"answer": answer, "status": status, "probs": probs, "issues": issues}


# --------------------------------------------------------------- the two wires


def openai_question(question: DecisionQuestion) -> dict[str, Any]:
    """The question in the Decisions API's shape (``decision_create_params.Question``)."""
    if question.kind == "predicate":
        return {"type": "predicate", "name": QUESTION_NAME, "instructions": question.instructions}
    described = dict(question.descriptions)
    choices = [
        {"value": label, **({"description": described[label]} if label in described else {})}
        for label in question.labels
    ]
    return {
        "type": "choice",
        "name": QUESTION_NAME,
        "instructions": question.instructions,
        "choices": choices,
    }


def systemone_question(question: DecisionQuestion) -> dict[str, Any]:
    """The question in System One's shape: ``noul``, or ``choice`` with criteria label -> text."""
    if question.kind == "predicate":
        return {"type": "noul", "instructions": question.instructions}
    described = dict(question.descriptions)
    criteria = {label: described.get(label) for label in question.labels}
    return {"type": "choice", "instructions": question.instructions, "criteria": criteria}


def _question(request: Request) -> DecisionQuestion:
    question = request.question
    if not isinstance(question, DecisionQuestion):
        raise BackendError("a decision backend needs a question per request", retryable=False)
    return question


def _reply(question: DecisionQuestion, answer: Any, tokens_in: int, tokens_out: int) -> Reply:
    text = json.dumps(read_answer(question, answer), ensure_ascii=False)
    return Reply(text, tokens_in, tokens_out, mode="decision")


class DecisionsBackend:
    """``POST /v1/decisions`` through the official SDK (``AsyncOpenAI().decisions.create``)."""

    name = "openai-decisions"

    def __init__(self, model: str, base_url: str | None = None, *, timeout: float = 120.0):
        from verbcal.elicit.openai_backend import _import_openai

        self.openai = _import_openai()
        if not hasattr(self.openai.AsyncOpenAI, "decisions"):
            raise BackendError(
                "this openai package has no Decisions API; run: pip install -U openai",
                retryable=False,
            )
        self.model = model
        key = os.environ.get("OPENAI_API_KEY") or ("not-needed" if base_url else None)
        if key is None:
            raise BackendError(
                "no OpenAI API key: set OPENAI_API_KEY, or pass --base-url for a server that"
                " needs none",
                retryable=False,
            )
        self._where = base_url or "api.openai.com"
        self._client = self.openai.AsyncOpenAI(
            api_key=key, base_url=base_url, timeout=timeout, max_retries=0
        )

    async def complete(self, request: Request) -> Reply:
        """Ask the item's question; the answer (or refusal) as a ``decision`` reply."""
        question = _question(request)
        openai = self.openai
        try:
            decision = await self._client.decisions.create(
                model=self.model, input=request.prompt, questions=[openai_question(question)]
            )
        except openai.APITimeoutError as exc:
            raise BackendError(f"timeout waiting for {self._where}", retryable=True) from exc
        except openai.APIConnectionError as exc:
            raise BackendError(
                f"connection to {self._where} failed: {exc}", retryable=True
            ) from exc
        except openai.APIStatusError as exc:
            headers = dict(exc.response.headers) if exc.response is not None else None
            raise status_error(
                exc.status_code,
                str(exc.message),
                self._where,
                headers,
                credentials=credentials_hint("openai"),
            ) from exc
        if len(decision.answers) != 1:
            raise BackendError(
                f"{self._where} sent {len(decision.answers)} answers to one question",
                retryable=True,
            )
        usage = decision.usage
        answer = decision.answers[0].model_dump(mode="json")
        return _reply(question, answer, usage.input_tokens, usage.output_tokens)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


SYSTEMONE_URL = "https://api.typesafe.ai/v1"
SYSTEMONE_KEY = "TYPESAFE_API_KEY"


class SystemOneBackend:
    """``POST {base}/systemone`` (TypeSafe System One) with ``aiohttp``; no SDK needed."""

    name = "systemone"

    def __init__(self, model: str, base_url: str | None = None, *, timeout: float = 120.0):
        self.model = model
        key = os.environ.get(SYSTEMONE_KEY) or ("not-needed" if base_url else None)
        if key is None:
            raise BackendError(
                f"no System One API key: set {SYSTEMONE_KEY}, or pass --base-url for a server"
                " that needs none",
                retryable=False,
            )
        self._url = (base_url or SYSTEMONE_URL).rstrip("/") + "/systemone"
        self._where = base_url or "api.typesafe.ai"
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._timeout = timeout
        self._session: Any = None

    async def complete(self, request: Request) -> Reply:
        """Ask the item's question; a missing answer is a refusal."""
        import aiohttp

        question = _question(request)
        body = {
            "model": self.model,
            "state": request.prompt,
            "questions": {QUESTION_NAME: systemone_question(question)},
        }
        if self._session is None:  # created inside the running event loop
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        try:
            async with self._session.post(self._url, json=body, headers=self._headers) as response:
                raw, status, headers = await response.read(), response.status, response.headers
        except TimeoutError as exc:
            raise BackendError(f"timeout waiting for {self._where}", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise BackendError(
                f"connection to {self._where} failed: {exc}", retryable=True
            ) from exc
        if status >= 400:
            detail = raw.decode("utf-8", "replace")[:300]
            credentials = f"the environment variable {SYSTEMONE_KEY}"
            raise status_error(status, detail, self._where, dict(headers), credentials=credentials)
        try:
            data = json.loads(raw)
            answers = data["answers"]
            usage = data.get("usage") or {}
            tokens = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"{self._where} sent an unexpected reply: {exc}", retryable=True
            ) from exc
        return _reply(question, answers.get(QUESTION_NAME), *tokens)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
