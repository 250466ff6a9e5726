"""``auto``: the calibrator built by cross-validated NLL on the calibration data only.

Every candidate is scored by repeated stratified K-fold cross-validation: each item's
predicted gold probability comes from a fit that did not see it. Two rules turn the
scores into a calibrator:

* ``stack`` (default): a weighted mixture of the candidates' distributions whose weights
  maximise the out-of-fold log score (stacking of predictive distributions; Wolpert 1992,
  Breiman 1996, Yao et al. 2018). Mixing cannot be sharper than its sharpest member, and
  a member that overfits in cross-validation gets little weight.
* ``1se``: the *simplest* candidate whose mean out-of-fold NLL is within one standard
  error of the best candidate's (the paired standard error of the per-item differences),
  with simplicity ordered identity < floor < temperature < vector < matrix < one-vs-rest.

The table, the weights and the reason are saved with the fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from verbcal.calibration.base import Calibrator, register
from verbcal.calibration.constraints import (
    Interval,
    ListOf,
    Options,
    ParamConstraints,
    ParameterError,
    field,
    number,
)
from verbcal.calibration.rows import Array, CalibratorError, Counts, count_rows
from verbcal.calibration.specs import parse_spec

DEFAULT_CANDIDATES: tuple[str, ...] = (
    "identity",
    "floor",
    "temperature",
    "vector[reg=0.1]",
    "matrix[prior=1]",
)
"""The scaling family, vector and matrix scaling pulled towards the identity map.

Plain ``vector`` and ``matrix`` (ODIR leaves W's diagonal free) are left out by default:
on a separable calibration set they sharpen without bound, which cross-validation cannot
see when no held-out item is misclassified, and one test error then costs many nats
(measured on the bundled BBC news at 25-100 items). Add them, or ``platt``,
``isotonic``, ``histogram``, through ``candidates``."""
VERBAL_CANDIDATES: tuple[str, ...] = (*DEFAULT_CANDIDATES, "words")
"""Candidates for confidence stated in words (``--source verbal``): the scaling family plus
``words``. Callers that know the data are verbal (the CLI, the pipeline, the study) pass
these; :func:`candidates_for` says which."""
RULES = ("stack", "1se")


def candidates_for(reply: str) -> tuple[str, ...]:
    """``auto``'s default candidates for data read from ``reply`` (``probs`` or ``verbal``)."""
    return VERBAL_CANDIDATES if reply == "verbal" else DEFAULT_CANDIDATES


MIN_WEIGHT = 0.01
"""Stacking weights below this are dropped and the rest refitted: a member with weight w
moves no distribution by more than w in total variation."""
NLL_CLIP = 1e-12
"""Per-item NLL is -ln(max(q_y, NLL_CLIP)), as in :func:`verbcal.metrics.nll`."""


def stratified_folds(y: NDArray[np.int64], k: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """A fold index in [0, k) per item; each label is dealt round-robin after shuffling."""
    folds = np.empty(len(y), dtype=np.int64)
    offset = 0
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        folds[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)
    return folds


def out_of_fold_gold(
    candidate: Calibrator,
    probs: Array,
    y: NDArray[np.int64],
    labels: Sequence[str],
    folds: NDArray[np.int64],
    weight: Array | None = None,
) -> Array | None:
    """Per-item probability of the gold label from a fit without the item's fold.

    None when a fit fails in any fold (the candidate is then out of the running).
    """
    from verbcal.calibration import clone

    gold = np.empty(len(y))
    for fold in np.unique(folds):
        train, held = folds != fold, folds == fold
        try:
            fitted = clone(candidate).fit(
                probs[train],
                y[train],
                sample_weight=None if weight is None else weight[train],
                labels=labels,
            )
            q = fitted.predict_proba(probs[held])
        except (CalibratorError, ValueError, FloatingPointError, np.linalg.LinAlgError):
            return None
        gold[held] = q[np.arange(len(q)), y[held]]
    return gold


def nll_per_item(gold: Array) -> Array:
    """-ln(max(q_y, NLL_CLIP)), item by item."""
    return -np.log(np.maximum(gold, NLL_CLIP))


def check_candidate(spec: Any) -> None:
    """A candidate of ``auto``: a valid method spec other than ``auto`` itself."""
    if parse_spec(spec).method == "auto":
        raise CalibratorError("auto cannot be its own candidate")


@register
class AutoCalibrator(Calibrator):
    """A calibrator built from ``candidates`` by cross-validated NLL (see the module).

    ``candidates``: method specs (default: :data:`DEFAULT_CANDIDATES`); ``rule``:
    ``stack`` (a mixture weighted by out-of-fold log score) or ``1se`` (the simplest
    candidate within one standard error of the best); ``folds``: K of the stratified
    K-fold (lowered to the smallest label count, at least 2); ``repeats``: how many
    shufflings; ``seed``: of the shufflings. After ``fit``: ``members_`` (spec → the
    candidate fitted on all data, only those used), ``weights_`` (spec → weight, summing
    to 1), ``chosen_`` (the one spec, or ``stack``), ``cv_`` (a row per candidate) and
    ``reason_``.
    """

    method = "auto"
    summary = "built by cross-validated NLL: a stack of calibrators, or one by the 1-SE rule"
    uses_floor = False
    complexity = 10_000
    _parameter_constraints: ClassVar[ParamConstraints] = {
        "candidates": [None, ListOf("a non-empty list of method specs", check_candidate)],
        "rule": [Options(*RULES)],
        "folds": [Interval(int, 2, None)],
        "repeats": [Interval(int, 1, None)],
        "seed": [Interval(int, 0, None)],
    }

    def __init__(
        self,
        candidates: Sequence[str] | None = None,
        rule: str = "stack",
        folds: int = 5,
        repeats: int = 2,
        seed: int = 0,
    ) -> None:
        self.candidates = candidates
        self.rule = rule
        self.folds = folds
        self.repeats = repeats
        self.seed = seed

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: ArrayLike | None = None,
        labels: Sequence[str] | None = None,
        *,
        reuse: Sequence[Calibrator] = (),
    ) -> Calibrator:
        """Score every candidate by cross-validation, then fit the ones used on all data.

        ``reuse``: calibrators already fitted on exactly this ``X``, ``y``,
        ``sample_weight`` and ``labels`` (the evaluation core passes the other methods it
        fitted on the same calibration part). A member whose class and constructor
        arguments match one of them is taken as it is instead of being fitted again;
        the result is the same, only faster.
        """
        self._validate_params()
        p, gold, weight = self._prepare(X, y, sample_weight, labels)
        candidates = self._candidates()
        table, oof, losses = self._cross_validate(candidates, p, gold, weight)
        if self.rule == "stack":
            weights, reason = stacking_choice(table, oof, losses, weight)
        else:
            chosen, reason = one_standard_error_choice(table, losses, weight)
            weights = {chosen: 1.0}
        for row in table:
            row["weight"] = weights.get(row["method"], 0.0)
        self.cv_: list[dict[str, Any]] = table
        self.reason_: str = reason
        self.weights_: dict[str, float] = weights
        self.chosen_: str = next(iter(weights)) if len(weights) == 1 else "stack"
        self.members_: dict[str, Calibrator] = {
            spec: _fitted_like(candidates[spec], reuse, self.labels_)
            or candidates[spec].fit(p, gold, sample_weight=weight, labels=self.labels_)
            for spec in weights
        }
        self.floor_ = self._single.floor_ if self._single else None
        self.warnings_ = list(
            dict.fromkeys(w for member in self.members_.values() for w in member.warnings)
        )
        self.fit_info_ = self._describe_fit(count_rows(p, gold, weight))
        return self

    def cross_validate(
        self,
        X: Any,
        y: Any,
        candidates: Sequence[str] | None = None,
        sample_weight: ArrayLike | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The cross-validation table of ``candidates`` (default: this calibrator's) on
        ``(X, y)``, with this calibrator's folds, repeats and seed: the rows ``fit`` would
        put in ``cv_`` before choosing (``method``, ``complexity``, ``cv_nll``, ``folds``,
        ``repeats``; ``se`` None). Nothing is fitted on all data and this calibrator is
        left as it is, so a fitted ``auto`` can score other candidates on the same folds.
        """
        probe = AutoCalibrator(
            candidates=self.candidates if candidates is None else candidates,
            rule=self.rule,
            folds=self.folds,
            repeats=self.repeats,
            seed=self.seed,
        )
        p, gold, weight = probe._prepare(X, y, sample_weight, labels)
        table, _, _ = probe._cross_validate(probe._candidates(), p, gold, weight)
        return table

    @property
    def _single(self) -> Calibrator | None:
        """The one member when auto chose a single candidate."""
        return next(iter(self.members_.values())) if len(self.members_) == 1 else None

    @property
    def calibrator_(self) -> Calibrator:
        """The chosen calibrator itself when there is one (a stack is ``self``)."""
        return self._single or self

    def describe(self) -> str:
        """What auto built, e.g. ``0.62 matrix[prior=1] + 0.38 floor``."""
        if self._single:
            return self.chosen_
        return " + ".join(f"{w:.2f} {spec}" for spec, w in self.weights_.items())

    def _candidates(self) -> dict[str, Calibrator]:
        """Candidates by spec (``name`` or ``name[key=value,...]``), unfitted."""
        specs = list(self.candidates) if self.candidates is not None else list(DEFAULT_CANDIDATES)
        if not specs:
            raise CalibratorError("auto: give at least one candidate")
        out: dict[str, Calibrator] = {}
        for spec in dict.fromkeys(specs):
            variant = parse_spec(spec)
            if variant.method == self.method:
                raise CalibratorError("auto cannot be its own candidate")
            out[spec] = variant.make()
        return out

    def _cross_validate(
        self,
        candidates: dict[str, Calibrator],
        p: Array,
        gold: NDArray[np.int64],
        weight: Array | None,
    ) -> tuple[list[dict[str, Any]], dict[str, Array], dict[str, Array]]:
        """A row per candidate (mean out-of-fold NLL) and, per candidate that could be fitted
        in every fold, its out-of-fold gold probabilities, (repeats, n), and its per-item
        out-of-fold NLL averaged over the repeats, (n,)."""
        per_label = np.bincount(gold, minlength=len(self.labels_))
        k = max(2, min(self.folds, int(per_label[per_label > 0].min()), len(gold) // 2))
        rng = np.random.default_rng(self.seed)
        splits = [stratified_folds(gold, k, rng) for _ in range(self.repeats)]
        table, oof, losses = [], {}, {}
        for spec, candidate in candidates.items():
            runs = [out_of_fold_gold(candidate, p, gold, self.labels_, f, weight) for f in splits]
            mean = None
            if all(run is not None for run in runs):
                oof[spec] = np.array(runs)
                losses[spec] = nll_per_item(oof[spec]).mean(axis=0)
                mean = _weighted_mean(losses[spec], weight)
            table.append(
                {
                    "method": spec,
                    "complexity": candidate.complexity,
                    "cv_nll": mean,
                    "se": None,
                    "folds": k,
                    "repeats": len(splits),
                }
            )
        return table, oof, losses

    def _fit(self, data: Counts) -> None:  # fit() is overridden
        raise NotImplementedError

    def _predict(self, rows: Array) -> Array:
        mixture = np.zeros_like(rows)
        for spec, member in self.members_.items():
            mixture += self.weights_[spec] * member._predict(rows)
        return mixture

    def describe_floor(self) -> str:
        if not self.is_fitted:
            return "not used"
        if self._single:
            return self._single.describe_floor()
        return "; ".join(f"{spec}: {m.describe_floor()}" for spec, m in self.members_.items())

    def _state(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen_,
            "reason": self.reason_,
            "cv": self.cv_,
            "weights": self.weights_,
            "members": {spec: m.to_dict() for spec, m in self.members_.items()},
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.chosen_ = str(field(state, "chosen", "state"))
        self.reason_ = str(field(state, "reason", "state"))
        cv = field(state, "cv", "state")
        if not isinstance(cv, list):
            raise ParameterError(f"state.cv must be a list, got {cv!r:.80}")
        self.cv_ = list(cv)
        if "calibrator" in state:  # written before stacking: one chosen calibrator
            state = {"weights": {self.chosen_: 1.0}, "members": {self.chosen_: state["calibrator"]}}
        weights, members = field(state, "weights", "state"), field(state, "members", "state")
        if not isinstance(weights, dict) or not weights:
            raise ParameterError(f"state.weights must be a non-empty object, got {weights!r:.80}")
        if not isinstance(members, dict) or set(members) != set(weights):
            raise ParameterError("state.members must hold one calibrator per spec of state.weights")
        unit = [Interval(float, 0, 1)]
        self.weights_ = {
            str(k): number(v, f"state.weights[{k!r}]", unit) for k, v in weights.items()
        }
        if abs(sum(self.weights_.values()) - 1.0) > 1e-6:
            raise ParameterError(
                f"state.weights must sum to 1, got {sum(self.weights_.values()):.6g}"
            )
        self.members_ = {}
        for spec, member in members.items():
            try:
                fitted = Calibrator.from_dict(member)
            except CalibratorError as exc:
                raise ParameterError(f"state.members[{spec!r}]: {exc}") from exc
            if fitted.labels_ != self.labels_:
                raise ParameterError(
                    f"state.members[{spec!r}].labels {list(fitted.labels_)} differ from the "
                    f"file's labels {list(self.labels_)}"
                )
            self.members_[str(spec)] = fitted


def _fitted_like(
    candidate: Calibrator, fitted: Sequence[Calibrator], labels: tuple[str, ...]
) -> Calibrator | None:
    """The first of ``fitted`` of the candidate's class and constructor arguments, if any."""
    params = candidate.get_params()
    for other in fitted:
        if (
            type(other) is type(candidate)
            and other.is_fitted
            and other.labels_ == labels
            and other.get_params() == params
        ):
            return other
    return None


def _weighted_mean(values: Array, weight: Array | None) -> float | None:
    if not np.all(np.isfinite(values)):
        return None
    return float(np.average(values, weights=weight))


def _paired_se(diff: Array, weight: Array | None) -> float:
    """Standard error of the (weighted) mean of per-item differences."""
    w = np.ones(len(diff)) if weight is None else weight
    mean = float(np.average(diff, weights=w))
    n_eff = float(w.sum() ** 2 / np.sum(w * w))
    spread = math.sqrt(float(np.average((diff - mean) ** 2, weights=w)))
    return spread / math.sqrt(max(n_eff - 1.0, 1.0))


def one_standard_error_choice(
    table: Sequence[dict[str, Any]],
    losses: dict[str, Array],
    weight: Array | None = None,
) -> tuple[str, str]:
    """The simplest candidate within one standard error of the best; and why.

    The standard error is the paired one: of the mean per-item difference between a
    candidate's out-of-fold losses and the best candidate's (same items, same folds).
    Each row's ``se`` is filled in with it.
    """
    scored = _scored(table)
    best = _with_paired_se(scored, losses, weight)
    chosen = min(
        (r for r in scored if r["cv_nll"] <= best["cv_nll"] + r["se"]),
        key=lambda r: (r["complexity"], r["cv_nll"]),
    )
    folds = f"{best['folds']}-fold CV x {best['repeats']}"
    if chosen is best:
        reason = (
            f"{chosen['method']} has the lowest cross-validated NLL ({best['cv_nll']:.4f}, "
            f"{folds}) and every simpler candidate is worse by more than one paired "
            "standard error"
        )
    else:
        reason = (
            f"{chosen['method']} is the simplest candidate within one paired standard error "
            f"of the best ({best['method']} {best['cv_nll']:.4f}; {chosen['method']} "
            f"{chosen['cv_nll']:.4f} ± {chosen['se']:.4f}, {folds})"
        )
    return str(chosen["method"]), reason


def stacking_weights(gold: Array, weight: Array | None = None, iterations: int = 2000) -> Array:
    """Mixture weights w (on the simplex) maximising sum_i s_i ln(sum_m w_m gold[i, m]).

    ``gold``: (n, M) out-of-fold gold probabilities; ``weight``: item weights s. The
    problem is concave; the EM update w_m <- mean_i s_i w_m g_im / (g_i . w) increases it
    at every step and stops when no weight moves by more than 1e-10.
    """
    s = np.ones(len(gold)) if weight is None else weight
    s = s / s.sum()
    g = np.maximum(gold, NLL_CLIP)
    w = np.full(g.shape[1], 1.0 / g.shape[1])
    for _ in range(iterations):
        updated = w * (s @ (g / (g @ w)[:, None]))
        updated /= updated.sum()
        if np.abs(updated - w).max() < 1e-10:
            return updated
        w = updated
    return w


def stacking_choice(
    table: Sequence[dict[str, Any]],
    oof: dict[str, Array],
    losses: dict[str, Array],
    weight: Array | None = None,
) -> tuple[dict[str, float], str]:
    """Stacking weights by spec (members under :data:`MIN_WEIGHT` dropped, the rest
    refitted), and why. Each repeat's out-of-fold predictions count as observations;
    ``losses`` (per-item out-of-fold NLL) give each row's ``se``, as for the 1-SE rule."""
    scored = _scored(table)
    best = _with_paired_se(scored, losses, weight)
    specs = [str(r["method"]) for r in scored]
    repeats = len(next(iter(oof.values())))
    item_weight = None if weight is None else np.tile(weight, repeats)
    while True:
        gold = np.stack([oof[spec].ravel() for spec in specs], axis=1)
        w = stacking_weights(gold, item_weight)
        if w.min() >= MIN_WEIGHT or len(specs) == 1:
            break
        specs = [spec for spec, wm in zip(specs, w, strict=True) if wm >= MIN_WEIGHT] or [
            specs[int(np.argmax(w))]
        ]
    mixed = nll_per_item(gold @ w).reshape(repeats, -1).mean(axis=0)
    order = np.argsort(-w, kind="stable")
    weights = {specs[i]: float(w[i]) for i in order}
    folds = f"{best['folds']}-fold CV x {best['repeats']}"
    reason = (
        f"stacking: weights maximise the out-of-fold log score ({folds}); mixture "
        f"{_weighted_mean(mixed, weight):.4f} (on the predictions its weights were fitted to) "
        f"vs best single candidate {best['method']} {best['cv_nll']:.4f}"
    )
    return weights, reason


def _with_paired_se(
    scored: Sequence[dict[str, Any]], losses: dict[str, Array], weight: Array | None
) -> dict[str, Any]:
    """The best row; every row's ``se`` set to the paired standard error against it."""
    best = min(scored, key=lambda r: (r["cv_nll"], r["complexity"]))
    for row in scored:
        row["se"] = _paired_se(losses[row["method"]] - losses[best["method"]], weight)
    return best


def _scored(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    scored = [r for r in table if r["cv_nll"] is not None]
    if not scored:
        raise CalibratorError("auto: no candidate could be fitted in every fold")
    return scored


__all__ = [
    "DEFAULT_CANDIDATES",
    "MIN_WEIGHT",
    "RULES",
    "AutoCalibrator",
    "nll_per_item",
    "one_standard_error_choice",
    "out_of_fold_gold",
    "stacking_choice",
    "stacking_weights",
    "stratified_folds",
]
