"""The run → report contract: ``metrics.json`` as dataclasses.

``verbcal run`` builds a :class:`RunMetrics` and writes ``RunMetrics.to_dict()`` (through
:func:`verbcal.jsonio.write_json`); the report, ``verbcal report`` and the demo read it back
with :meth:`RunMetrics.from_dict`. ``to_dict`` gives the keys in the order the file has
always had, so the JSON written is unchanged, and ``from_dict(to_dict())`` is the identity.

The top level and each method's entry are typed; the deeper parts (fitted parameters,
thresholds, decisions, options, conventions) stay plain JSON objects, documented where
they are computed (:mod:`verbcal.pipeline`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

FORMAT = "verbcal-run"
"""The ``format`` field of every ``metrics.json``."""
VERSION = 1
"""The ``version`` field: bumped when a field changes meaning or disappears."""

_METHOD_OPTIONAL = ("thresholds", "selective", "decisions")


@dataclass
class MethodResult:
    """One calibration method of a run: where its calibrator is, what it fitted, how it scored."""

    role: str = ""
    calibrator: str = ""
    """The calibrator file, relative to the run directory."""
    params: dict[str, Any] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cv_nll: float | None = None
    """Cross-validated NLL on the calibration part (None/NaN when not computed)."""
    test: dict[str, Any] = field(default_factory=dict)
    """Test-part metrics (:data:`verbcal.metrics.METRICS`)."""
    ci: dict[str, Any] = field(default_factory=dict)
    """Per metric, the bootstrap interval [lo, hi] on the test part."""
    thresholds: dict[str, Any] | None = None
    selective: dict[str, Any] | None = None
    decisions: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The method's entry of ``metrics.json`` (optional parts only where present)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in _METHOD_OPTIONAL:
            if out[name] is None:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodResult:
        return cls(
            role=data.get("role", ""),
            calibrator=data.get("calibrator", ""),
            params=data.get("params", {}),
            floor=data.get("floor", {}),
            fit=data.get("fit", {}),
            warnings=list(data.get("warnings", [])),
            cv_nll=data.get("cv_nll"),
            test=data.get("test", {}),
            ci=data.get("ci", {}),
            thresholds=data.get("thresholds"),
            selective=data.get("selective"),
            decisions=data.get("decisions"),
        )


@dataclass
class RunMetrics:
    """Everything ``verbcal run`` measured: the content of ``metrics.json``."""

    labels: list[str] = field(default_factory=list)
    n_records: int = 0
    n_usable: int = 0
    n_labelled: int = 0
    n_calibration: int = 0
    n_test: int = 0
    recommended: str = ""
    methods: dict[str, MethodResult] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION
    created: str = ""
    verbcal: str = ""
    python: str = ""
    run: dict[str, Any] = field(default_factory=dict)
    """How the run was made: origin, task, backend, model, elicitation summary."""
    status_counts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    conventions: dict[str, str] = field(default_factory=dict)
    cv_nll: dict[str, Any] = field(default_factory=dict)
    best_alternative: str | None = None
    auto: dict[str, Any] = field(default_factory=dict)
    baseline: str = ""
    notes: list[str] = field(default_factory=list)

    _ORDER = (
        "format",
        "version",
        "created",
        "verbcal",
        "python",
        "run",
        "labels",
        "n_records",
        "n_usable",
        "n_labelled",
        "n_calibration",
        "n_test",
        "status_counts",
        "label_counts",
        "options",
        "conventions",
        "cv_nll",
        "best_alternative",
        "recommended",
        "auto",
        "baseline",
        "methods",
        "notes",
    )

    def to_dict(self) -> dict[str, Any]:
        """``metrics.json`` as a dict, keys in the file's order (not yet JSON-cleaned)."""
        out = {name: getattr(self, name) for name in self._ORDER}
        out["methods"] = {name: m.to_dict() for name, m in self.methods.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMetrics:
        """Read a ``metrics.json`` object (as written by :meth:`to_dict`); absent fields take
        their defaults, unknown ones are ignored. Raises ``ValueError`` for an object of
        another format or of a newer version."""
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        if found != FORMAT:
            raise ValueError(
                f"not a metrics.json of `verbcal run`: format {found!r}, not {FORMAT!r}"
            )
        if not isinstance(data.get("version"), int) or data["version"] > VERSION:
            raise ValueError(
                f"metrics.json version {data.get('version')!r} is newer than this verbcal reads"
                f" ({VERSION}): upgrade verbcal"
            )
        known = {f.name for f in fields(cls)} - {"methods"}
        values = {k: v for k, v in data.items() if k in known}
        methods = {k: MethodResult.from_dict(v) for k, v in data.get("methods", {}).items()}
        return cls(methods=methods, **values)

    @classmethod
    def load(cls, path: str | Path) -> RunMetrics:
        """Read ``metrics.json`` from a file."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


__all__ = ["FORMAT", "VERSION", "MethodResult", "RunMetrics"]
