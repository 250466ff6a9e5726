"""The bakeoff's configuration (``bakeoff.yaml``), validated with pydantic.

A bakeoff compares *arms* — set-ups that turn an item into a label distribution — on the
same labelled items after calibration. Each arm is either live (a backend and model that
:mod:`verbcal.bakeoff.collect` asks through verbcal's elicit engine) or recorded (replies
already collected, read from a file). Example::

    task: task.yaml            # the task (labels, instruction); optional if every arm is
                               # recorded and ``labels`` is given
    items: items.jsonl         # the items with gold labels (live arms)
    labels: [acceptable, unacceptable]   # optional: the task gives them
    decision: {positive: acceptable, precision: 0.9, metric: review_rate}
    method: auto               # the calibrator every arm gets (default auto)
    arms:
      - name: mini-numbers
        backend: openai
        model: gpt-4o-mini
        reply: numeric         # numeric | verbal | top-label
        samples: 3             # k replies at llm_temperature, averaged (spread kept)
        llm_temperature: 0.7
      - name: mini-batch       # the same requests through the provider's batch API
        backend: openai
        model: gpt-4o-mini
        batch: true            # numeric only; run by verbcal elicit --batch
      - name: decision-model   # a decision model (verbcal elicit's decision backends)
        backend: openai-decisions
      - name: recorded-words
        recorded: judge.jsonl  # a JSONL file with id, label and probs / verbal
        source: verbal
        about: acceptable

Relative paths are read relative to the config file. Every error names the file, the
field (``arms[1].samples``) and what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPLY_FORMATS = ("numeric", "verbal", "top-label")
"""``numeric``: a distribution over the labels (the paper's format); ``verbal``: a phrase
saying how likely the ``about`` label is (mapped to a probability by a lexicon);
``top-label``: one answer plus one stated confidence (Tian et al. 2023), turned into a
distribution by giving the answer its confidence and spreading the rest evenly over the
other labels."""

DECISION_METRICS = ("recall", "review_rate")
"""``recall``: recall of the ``positive`` label on the test part at the Learn-then-Test
threshold chosen on the calibration part for the precision target (higher is better);
``review_rate``: for judges, the share of test items that neither the accept nor the
reject threshold (each chosen on the calibration part with LTT at the precision target)
decides, so a person must review them (lower is better)."""


class BakeoffError(ValueError):
    """A bakeoff that cannot run: the message says where (file, field) and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Decision(_Strict):
    """The decision the bakeoff ranks arms by (see :data:`DECISION_METRICS`)."""

    positive: str | None = None
    """The label the decision is about; default: the task's first label."""
    precision: Annotated[float, Field(gt=0, lt=1)] = 0.9
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    metric: Literal["recall", "review_rate"] = "recall"


class Arm(_Strict):
    """One set-up to compare: live (backend + model) or recorded (a file of replies)."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.@+-]+$")]
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    reply: Literal["numeric", "verbal", "top-label"] = "numeric"
    samples: Annotated[int, Field(ge=1, le=100)] = 1
    llm_temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    prompt: str | None = None
    """A prompt template with the task's placeholders ({text}, {instruction}, {labels},
    {label_names}, {name}) and, for verbal replies, {about}; default: the format's own."""
    about: str | None = None
    """Verbal replies: the label the phrase speaks of (default: the decision's positive)."""
    max_tokens: Annotated[int, Field(ge=1)] = 256
    concurrency: Annotated[int, Field(ge=1)] = 8
    rpm: Annotated[float, Field(gt=0)] | None = None
    tpm: Annotated[float, Field(gt=0)] | None = None
    structured: bool = True
    price_per_1m_input: Annotated[float, Field(ge=0)] | None = None
    price_per_1m_output: Annotated[float, Field(ge=0)] | None = None
    recorded: str | None = None
    source: Literal["probs", "verbal"] | None = None
    batch: bool = False
    """Live numeric arms on ``openai``/``anthropic``: send the requests through the
    provider's batch API (``verbcal elicit --batch``) instead of live calls."""

    @model_validator(mode="after")
    def _consistent(self) -> Arm:
        if self.recorded is not None:
            live = [k for k in ("backend", "model", "base_url", "prompt") if getattr(self, k)]
            if live:
                raise ValueError(
                    f"a recorded arm takes no {live[0]!r}: remove it, or remove 'recorded'"
                    " to ask the model live"
                )
            if self.source is None:
                raise ValueError("a recorded arm needs 'source: probs' or 'source: verbal'")
            if self.batch:
                raise ValueError("a recorded arm takes no 'batch': remove it")
        else:
            if self.backend is None:
                raise ValueError(
                    "give 'backend' (and 'model') for a live arm, or 'recorded: FILE' with"
                    " 'source: probs|verbal' for replies already collected"
                )
            if self.source is not None:
                raise ValueError("'source' is for recorded arms only: remove it")
            from verbcal.elicit.backends import BACKENDS

            if self.backend not in BACKENDS:
                raise ValueError(
                    f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}"
                )
            self._check_elicited()
        if (self.price_per_1m_input is None) != (self.price_per_1m_output is None):
            raise ValueError("give both price_per_1m_input and price_per_1m_output, or neither")
        if self.prompt is not None and "{text}" not in self.prompt:
            raise ValueError("the prompt template does not contain {text}: add it where it goes")
        return self

    def _check_elicited(self) -> None:
        """What a batch arm or a decision-model arm (run by ``verbcal elicit``) cannot take."""
        from verbcal.elicit.batch.options import BatchOptions
        from verbcal.elicit.decisions_backend import DECISION_BACKENDS

        if self.backend in DECISION_BACKENDS:
            if self.batch:
                raise ValueError(f"backend {self.backend!r} has no batch API: remove 'batch'")
            if self.samples != 1:
                raise ValueError(
                    f"backend {self.backend!r} reads probabilities from the model's scores,"
                    " one answer per item: use 'samples: 1'"
                )
            if self.reply != "numeric" or self.prompt is not None:
                raise ValueError(
                    f"backend {self.backend!r} answers a distribution to the task's question,"
                    " with no prompt or reply format: remove 'reply' and 'prompt'"
                )
        if self.batch:
            if BatchOptions().problem(str(self.backend)) is not None:
                raise ValueError(
                    "'batch: true' needs a provider batch API ('backend: openai' or"
                    f" 'backend: anthropic'), not {self.backend!r}: change the backend or"
                    " remove 'batch'"
                )
            if self.reply != "numeric":
                raise ValueError(
                    "'batch: true' sends the task's numeric requests (as verbcal elicit"
                    " --batch): use 'reply: numeric', or remove 'batch'"
                )

    @property
    def via_elicit(self) -> bool:
        """True for an arm elicited by ``verbcal elicit`` itself (a batch arm, or a
        decision-model backend), rather than by the bakeoff's own requests."""
        from verbcal.elicit.decisions_backend import DECISION_BACKENDS

        return not self.is_recorded and (self.batch or self.backend in DECISION_BACKENDS)

    @property
    def is_recorded(self) -> bool:
        """True for an arm read from a file of replies."""
        return self.recorded is not None

    @property
    def format(self) -> str:
        """The reply format: ``reply`` for live arms, ``numeric``/``verbal`` for recorded."""
        if self.recorded is not None:
            return "numeric" if self.source == "probs" else "verbal"
        return self.reply

    @property
    def temperature(self) -> float:
        """The sampling temperature: ``llm_temperature``, else 0 for one reply, 0.7 for more."""
        if self.llm_temperature is not None:
            return self.llm_temperature
        return 0.0 if self.samples == 1 else 0.7

    @property
    def price(self) -> tuple[float, float] | None:
        """The (input, output) price in USD per million tokens given in the config, if any."""
        if self.price_per_1m_input is None or self.price_per_1m_output is None:
            return None
        return (self.price_per_1m_input, self.price_per_1m_output)


class _Document(_Strict):
    task: str | None = None
    items: str | None = None
    labels: list[str] | None = None
    decision: Decision = Decision()
    arms: Annotated[list[Arm], Field(min_length=2)]
    store: str | None = None
    prices: str | None = None
    method: str = "auto"
    """The calibrator every arm gets (a method spec, as every command takes them)."""

    @model_validator(mode="after")
    def _names(self) -> _Document:
        from verbcal.calibration.specs import parse_spec

        parse_spec(self.method)
        seen: set[str] = set()
        for arm in self.arms:
            if arm.name in seen:
                raise ValueError(f"two arms are named {arm.name!r}: give every arm its own name")
            seen.add(arm.name)
        live = [arm.name for arm in self.arms if not arm.is_recorded]
        if live and (self.task is None or self.items is None):
            missing = "task" if self.task is None else "items"
            raise ValueError(
                f"arm {live[0]!r} asks a model, which needs '{missing}': give the task YAML"
                " and the items file with gold labels"
            )
        if self.task is None and not self.labels:
            raise ValueError("give 'labels' (a list of label names) or a 'task' to take them from")
        return self


class BakeoffConfig:
    """A validated bakeoff: paths resolved against the config's folder."""

    def __init__(self, document: _Document, base: Path, source: str = "<memory>") -> None:
        self.doc, self.base, self.source = document, base, source
        self._task: Any = None

    @classmethod
    def load(cls, path: str | Path) -> BakeoffConfig:
        """Read and validate a ``bakeoff.yaml``; :class:`BakeoffError` says what to fix."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BakeoffError(f"{path}: file not found; check --config") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BakeoffError(f"{path}: cannot read the file ({exc})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = "" if mark is None else f", line {mark.line + 1}"
            raise BakeoffError(f"{path}{where}: not valid YAML ({exc}); fix the syntax") from None
        return cls.from_dict(data, base=path.parent, source=str(path))

    @classmethod
    def from_dict(
        cls, data: Any, base: str | Path = ".", source: str = "<memory>"
    ) -> BakeoffConfig:
        """Validate a mapping (as read from YAML)."""
        if not isinstance(data, dict):
            raise BakeoffError(
                f"{source}: the file is not a YAML mapping; write task, items, decision and"
                " arms keys"
            )
        try:
            document = _Document.model_validate(data)
        except ValidationError as exc:
            raise BakeoffError(describe(exc, source, data)) from None
        config = cls(document, Path(base), source)
        config._check_labels()
        return config

    # --- resolved pieces -------------------------------------------------------------------
    @property
    def arms(self) -> list[Arm]:
        return list(self.doc.arms)

    @property
    def decision(self) -> Decision:
        return self.doc.decision

    def path(self, value: str) -> str:
        """``value`` relative to the config's folder (``recorded:<name>`` kept as it is)."""
        if value.startswith("recorded:") or Path(value).is_absolute():
            return value
        return str(self.base / value)

    @property
    def task(self) -> Any:
        """The :class:`verbcal.task.Task` (loaded once), or None without one."""
        if self.doc.task is None:
            return None
        if self._task is None:
            from verbcal.task import load_task

            self._task = load_task(self.path(self.doc.task))
        return self._task

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names, in the task's order (or as the config lists them)."""
        if self.doc.labels:
            return tuple(self.doc.labels)
        return tuple(self.task.labels)

    @property
    def positive(self) -> str:
        """The label the decision is about."""
        return self.decision.positive or self.labels[0]

    def about(self, arm: Arm) -> str:
        """The label a verbal arm's phrase speaks of."""
        return arm.about or self.positive

    def _check_labels(self) -> None:
        labels = self.labels
        if (
            self.doc.task is not None
            and self.doc.labels
            and tuple(self.doc.labels) != tuple(self.task.labels)
        ):
            raise BakeoffError(
                f"{self.source}, field 'labels': {self.doc.labels} differ from the task's"
                f" {list(self.task.labels)}; remove 'labels' or make them equal"
            )
        if self.decision.positive is not None and self.decision.positive not in labels:
            raise BakeoffError(
                f"{self.source}, field 'decision.positive': {self.decision.positive!r} is not"
                f" a label; choose one of {list(labels)}"
            )
        for index, arm in enumerate(self.arms):
            if arm.about is not None and arm.about not in labels:
                raise BakeoffError(
                    f"{self.source}, field 'arms[{index}].about': {arm.about!r} is not a label;"
                    f" choose one of {list(labels)}"
                )
            if arm.format == "verbal" and len(labels) != 2 and arm.about is None:
                raise BakeoffError(
                    f"{self.source}, field 'arms[{index}].about': verbal replies with"
                    f" {len(labels)} labels need 'about' (the label the phrase speaks of)"
                )


def describe(exc: ValidationError, source: str, data: Any) -> str:
    """Pydantic's errors as ``file, field arms[1].samples: problem`` lines (first 5)."""
    lines = []
    for error in exc.errors()[:5]:
        where = _location(error["loc"], data)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling (see docs/bakeoff.md)"
        lines.append(f"{source}, field {where}: {message}")
    more = len(exc.errors()) - len(lines)
    if more > 0:
        lines.append(f"... and {more} more")
    return "\n".join(lines)


def _location(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
        else:
            parts.append(str(item))
    text = ".".join(parts) or "(top level)"
    if len(loc) >= 2 and loc[0] == "arms" and isinstance(loc[1], int):
        arms = data.get("arms") if isinstance(data, dict) else None
        if isinstance(arms, list) and loc[1] < len(arms) and isinstance(arms[loc[1]], dict):
            name = arms[loc[1]].get("name")
            if name:
                text += f" (arm {name!r})"
    return repr(text) if " " not in text else text


__all__ = [
    "DECISION_METRICS",
    "REPLY_FORMATS",
    "Arm",
    "BakeoffConfig",
    "BakeoffError",
    "Decision",
    "describe",
]
