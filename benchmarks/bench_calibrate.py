"""Speed and agreement of verbcal's temperature fit and top-label ECE against other libraries.

Data: N rows (default 1,000,000), K = 4, seeded. Logits z ~ Normal(0, 1.5); gold labels are
drawn from softmax(z); the "verbalized" distribution is softmax(2 z) (overconfident) rounded
to the 0.05 grid as ``np.round(p * 20) / 20`` with the rounding error moved onto the argmax,
so every row sums to 1 on the grid, as an LLM writes it. The fitted T is therefore not 1.

Temperature fit, all at the same clip floor EPS (``--floor``, default 1e-3), all on the
logits z = log(max(p, EPS)):

* verbcal ``TemperatureScaling(floor=EPS).fit(P, y)`` (distinct rows + Newton);
* scikit-learn ``sklearn.calibration._TemperatureScaling`` (what
  ``CalibratedClassifierCV(method="temperature")`` fits), given z as logits; T = 1 / beta_;
* netcal ``TemperatureScaling`` given max(P, EPS) (it takes log itself); its ``.temperature``
  is 1/T;
* plain numpy + scipy ``minimize_scalar`` (bounded, on log T) over all rows.

Each T is reported with the NLL it gives on the data (one shared evaluator), and the largest
relative difference between implementations. Times include building the logits.

Top-label 15-bin ECE, timed on the gridded P (many confidences fall on bin edges k/15),
values also shown on the calibrated q (off the grid, no edge ties):

* verbcal ``verbcal.metrics.ece`` (right-closed bins, 1e-9 edge tolerance);
* plain numpy: argmax/max, the same right-closed binning, three ``bincount`` s;
* relplot ``binnedECE(conf, correct, 15)``: bin ``int(conf * 15)``, left-closed, 1.0 alone;
* netcal ``ECE(bins=15).measure``: ``histogramdd`` over ``linspace`` edges, left-closed;
* torchmetrics ``MulticlassCalibrationError``: float32, ``bucketize(right=True)``, 1.0 alone.

Libraries that bin differently give different values on the grid; each is also recomputed by
a numpy emulation of its own convention, so the difference is shown to come from binning
(and float32), not from a bug. References that cannot be imported are reported and skipped.

Install the references: ``pip install -e ".[bench]"``, but install torch's CPU build first,
``pip install "torch==2.13.0+cpu"`` (a plain ``pip install torch`` pulls ~3 GB of CUDA
wheels); netcal and torchmetrics then find torch already satisfied.

Usage: python benchmarks/bench_calibrate.py [--json] [--n N] [--repeats R] [--floor EPS]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from verbcal.calibration import TemperatureScaling
from verbcal.calibration.rows import (
    check_probs,
    count_codes,
    fit_inverse_temperature,
    grid_codes,
)
from verbcal.metrics import ece as verbcal_ece

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

K = 4
GRID = 20  # 0.05 grid
N_BINS = 15
EPS = 1e-3
EDGE_TOL = 1e-9
TS_REFS = ("verbcal", "sklearn", "netcal", "scipy")
ECE_REFS = ("verbcal", "bincount", "relplot", "netcal", "torchmetrics")
NEEDS = {"sklearn": "sklearn", "netcal": "netcal", "relplot": "relplot", "torchmetrics": "torch"}


# ---------------------------------------------------------------- data


def make_data(n: int, seed: int = 0, k: int = K) -> tuple[FloatArray, IntArray]:
    """Seeded verbalized distributions on the 0.05 grid (rows sum to 1) and gold labels."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, k))
    true = _softmax(z)
    y = np.minimum((true.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1), k - 1)
    units = np.round(_softmax(2.0 * z) * GRID)
    top = units.argmax(axis=1)
    units[np.arange(n), top] += GRID - units.sum(axis=1)
    return units / GRID, y.astype(np.int64)


def _softmax(a: FloatArray) -> FloatArray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def logits(p: FloatArray, eps: float) -> FloatArray:
    """The estimated logits every TS implementation is given: log(max(p, eps))."""
    return np.log(np.maximum(p, eps))


def nll_at(p: FloatArray, y: IntArray, eps: float, temperature: float) -> float:
    """Mean NLL of softmax(log(max(p, eps)) / T) on (p, y): the shared evaluator."""
    a = logits(p, eps) / temperature
    m = a.max(axis=1)
    lse = m + np.log(np.exp(a - m[:, None]).sum(axis=1))
    return float(np.mean(lse - a[np.arange(len(y)), y]))


# ---------------------------------------------------------------- temperature fits


def ts_verbcal(p: FloatArray, y: IntArray, eps: float) -> float:
    """verbcal: distinct rows with counts, safeguarded Newton on 1/T (maximum likelihood,
    the estimator every reference computes; the default MAP fit costs the same)."""
    return float(TemperatureScaling(floor=eps, prior_sd=None).fit(p, y).temperature)


def fit_split(p: FloatArray, y: IntArray, eps: float, repeats: int) -> dict[str, float]:
    """Median seconds of the fit's stages, run one by one on the same data, and the floors.

    Stages: ``checks`` (finite, non-negative, no all-zero row), ``coding rows`` (each row
    and label packed into one integer code), ``counting`` (one sort of the codes into
    distinct rows with label counts), ``newton`` (the solver on the distinct rows).
    Floors: ``read floor`` = one pass over the data (``p @ ones``), ``counting floor`` =
    bare numpy ``np.unique(rint(p * 20) @ w + y, return_counts=True)``, the least any fit
    that counts rows pays.
    """
    k = p.shape[1]
    coded = grid_codes(p, y)
    assert coded is not None
    rows, counts = count_codes(*coded, k=k)
    z = np.log(np.maximum(rows / rows.sum(axis=1, keepdims=True), eps))
    weights = float(GRID + 1) ** np.arange(k) * k
    stages: dict[str, Callable[[], object]] = {
        "fit (total)": partial(ts_verbcal, p, y, eps),
        "checks": partial(check_probs, p),
        "coding rows": partial(grid_codes, p, y),
        "counting": partial(count_codes, *coded, k=k),
        "newton": partial(fit_inverse_temperature, z, counts),
        "read floor": partial(np.dot, p, np.ones(k)),
        "counting floor": lambda: np.unique(np.rint(p * GRID) @ weights + y, return_counts=True),
    }
    out = {}
    for name, fn in stages.items():
        out[name], _, _ = timed(lambda fn=fn: float(fn() is not None), repeats)
    return out


def ts_sklearn(p: FloatArray, y: IntArray, eps: float) -> float:
    """scikit-learn's temperature scaling (bounded Brent on log beta), T = 1 / beta_."""
    from sklearn.calibration import _TemperatureScaling

    # log-probabilities are <= 0, so sklearn's "looks like probabilities" test is false
    # and they are used as logits unchanged.
    model = _TemperatureScaling().fit(logits(p, eps), y)
    return float(1.0 / model.beta_)


def ts_netcal(p: FloatArray, y: IntArray, eps: float) -> float:
    """netcal (torch, scipy L-BFGS-B); its ``temperature`` is the weight 1/T."""
    from netcal.scaling import TemperatureScaling as NetcalTS

    model = NetcalTS(method="mle")
    model.fit(np.maximum(p, eps), y, tensorboard=False)
    return float(1.0 / np.asarray(model.temperature).reshape(-1)[0])


def ts_scipy(p: FloatArray, y: IntArray, eps: float) -> float:
    """Plain numpy NLL over all rows, ``minimize_scalar`` (bounded) on log T."""
    z = logits(p, eps)
    zy = z[np.arange(len(y)), y]

    def loss(log_t: float) -> float:
        a = z / np.exp(log_t)
        m = a.max(axis=1)
        lse = m + np.log(np.exp(a - m[:, None]).sum(axis=1))
        return float(np.mean(lse) - np.mean(zy) / np.exp(log_t))

    res = minimize_scalar(loss, bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(res.x))


TS_FUNCS: dict[str, Callable[[FloatArray, IntArray, float], float]] = {
    "verbcal": ts_verbcal,
    "sklearn": ts_sklearn,
    "netcal": ts_netcal,
    "scipy": ts_scipy,
}


# ---------------------------------------------------------------- ECE


def top_label(q: FloatArray, y: IntArray) -> tuple[FloatArray, FloatArray]:
    """Confidence max q and correctness 1[argmax q == y] (ties to the first label)."""
    pred = q.argmax(axis=1)
    return q.max(axis=1), (pred == y).astype(np.float64)


def ece_bincount(q: FloatArray, y: IntArray, n_bins: int = N_BINS) -> float:
    """Plain numpy: right-closed bins with 1e-9 edge tolerance, count/conf/acc bincounts."""
    conf, correct = top_label(q, y)
    idx = np.clip(np.ceil(conf * n_bins - EDGE_TOL * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    return float(np.sum(np.abs(acc_sum - conf_sum)) / len(y)) if count.sum() else 0.0


def ece_verbcal(q: FloatArray, y: IntArray, n_bins: int = N_BINS) -> float:
    return float(verbcal_ece(q, y, n_bins=n_bins))


def ece_relplot(q: FloatArray, y: IntArray, n_bins: int = N_BINS) -> float:
    """relplot's ``binnedECE`` on (confidence, correct); top-label is computed here."""
    from relplot.metrics import binnedECE

    conf, correct = top_label(q, y)
    return float(binnedECE(conf, correct, nbins=n_bins))


def ece_netcal(q: FloatArray, y: IntArray, n_bins: int = N_BINS) -> float:
    """netcal's equal-width ECE (top-label for K > 2)."""
    from netcal.metrics import ECE

    return float(ECE(bins=n_bins).measure(q, y))


def ece_torchmetrics(q: FloatArray, y: IntArray, n_bins: int = N_BINS) -> float:
    """torchmetrics ``MulticlassCalibrationError`` (l1), update + compute."""
    import torch
    from torchmetrics.classification import MulticlassCalibrationError

    metric = MulticlassCalibrationError(num_classes=q.shape[1], n_bins=n_bins, norm="l1")
    metric.update(torch.from_numpy(q), torch.from_numpy(y))
    return float(metric.compute())


ECE_FUNCS: dict[str, Callable[[FloatArray, IntArray, int], float]] = {
    "verbcal": ece_verbcal,
    "bincount": ece_bincount,
    "relplot": ece_relplot,
    "netcal": ece_netcal,
    "torchmetrics": ece_torchmetrics,
}


def _gap_ece(idx: NDArray[np.intp], conf: FloatArray, correct: FloatArray) -> float:
    gap = np.bincount(idx, weights=correct - conf)
    return float(np.sum(np.abs(gap)) / len(conf))


def emulate(name: str, q: FloatArray, y: IntArray, n_bins: int = N_BINS) -> float:
    """ECE recomputed in numpy under library ``name``'s own binning convention."""
    conf, correct = top_label(q, y)
    if name in ("verbcal", "bincount"):
        idx = np.clip(np.ceil(conf * n_bins - EDGE_TOL * n_bins).astype(np.intp) - 1, 0, n_bins - 1)
    elif name == "relplot":  # int(f / (1/B)): left-closed by float division, 1.0 -> bin B
        idx = (conf / (1.0 / n_bins)).astype(np.intp)
    elif name == "netcal":  # clip to [eps, 1 - eps], histogramdd over linspace: left-closed
        eps = np.finfo(np.float64).eps
        clipped = np.clip(conf, eps, 1.0 - eps)
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        idx = np.minimum(np.searchsorted(edges, clipped, side="right") - 1, n_bins - 1)
        conf = clipped
    elif name == "torchmetrics":  # float32 values and edges, bucketize(right=True): 1.0 alone
        conf = conf.astype(np.float32).astype(np.float64)
        idx = np.searchsorted(_float32_edges(n_bins), conf, side="right") - 1
    else:
        raise ValueError(name)
    return _gap_ece(idx, conf, correct)


def _float32_edges(n_bins: int) -> FloatArray:
    """torchmetrics' edges: ``torch.linspace`` in float32 (its rounding differs from numpy's:
    the edge 0.4 lies above float32(0.4), 0.6 below float32(0.6))."""
    try:
        import torch

        edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32).numpy()
    except Exception:  # no torch: numpy's float32 linspace, close but not identical
        edges = np.linspace(0.0, 1.0, n_bins + 1, dtype=np.float32)
    return np.asarray(edges, dtype=np.float64)


CONVENTION = {
    "verbcal": "(a,b], 1e-9 edge tolerance",
    "bincount": "(a,b], 1e-9 edge tolerance",
    "relplot": "[a,b) by int(c*B); 1.0 own bin",
    "netcal": "[a,b) linspace edges; clip 1-eps",
    "torchmetrics": "float32, [a,b); 1.0 own bin",
}


# ---------------------------------------------------------------- harness


def missing_references(names: Iterable[str] = tuple(NEEDS)) -> dict[str, str]:
    """Reference name -> why it cannot be used (import error), for those of ``names`` unavailable."""
    missing: dict[str, str] = {}
    for name, module in NEEDS.items():
        if name not in names:
            continue
        try:
            importlib.import_module(module)
            if name in ("netcal", "torchmetrics"):
                importlib.import_module(name)
        except Exception as exc:  # any import failure means "skip", never crash
            missing[name] = f"not installed ({type(exc).__name__}: {exc})"
    return missing


def timed(
    fn: Callable[[], float], repeats: int, warmup: int = 1
) -> tuple[float, float, list[float]]:
    """(median seconds, last result, all times) of ``fn`` over ``repeats`` after warm-up."""
    for _ in range(warmup):
        fn()
    times, value = [], float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value, times


def _rel_spread(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    if len(finite) < 2:
        return float("nan")
    return float((max(finite) - min(finite)) / abs(min(finite)))


@dataclass
class Results:
    """Everything measured in one run."""

    n: int
    repeats: int
    floor: float
    seed: int
    skipped: dict[str, str] = field(default_factory=dict)
    ts: dict[str, dict[str, Any]] = field(default_factory=dict)
    ece: dict[str, dict[str, Any]] = field(default_factory=dict)
    split: dict[str, float] = field(default_factory=dict)
    """Stages of verbcal's fit and the floors (see :func:`fit_split`)."""

    def _ratio(self, section: str, num: str, den: str) -> float | None:
        table = self.ts if section == "ts" else self.ece
        if num not in table or den not in table:
            return None
        return float(table[num]["time_s"] / table[den]["time_s"])

    def to_dict(self) -> dict[str, Any]:
        temps = [r["temperature"] for r in self.ts.values()]
        nlls = [r["nll"] for r in self.ts.values()]
        out: dict[str, Any] = {
            "n": self.n,
            "k": K,
            "grid": 1.0 / GRID,
            "floor": self.floor,
            "n_bins": N_BINS,
            "repeats": self.repeats,
            "seed": self.seed,
        }
        for ref in TS_REFS[1:]:
            out[f"ts_speedup_vs_{ref}"] = self._ratio("ts", ref, "verbcal")
        for ref in ECE_REFS[1:]:
            out[f"ece_ratio_vs_{ref}"] = self._ratio("ece", "verbcal", ref)
        out["ts_max_rel_diff_temperature"] = _rel_spread(temps)
        out["ts_max_rel_diff_nll"] = _rel_spread(nlls)
        out["ts"] = self.ts
        out["ece"] = self.ece
        out["fit_split"] = self.split
        if self.split:
            out["fit_over_counting_floor"] = (
                self.split["fit (total)"] / self.split["counting floor"]
            )
        out["skipped"] = self.skipped
        return out


def run(
    n: int = 1_000_000,
    repeats: int = 3,
    floor: float = EPS,
    seed: int = 0,
    refs: Sequence[str] | None = None,
    warmup: int = 1,
) -> Results:
    """Run every available implementation (or only ``refs``) and collect times and values."""
    wanted = set(refs) if refs is not None else set(TS_REFS) | set(ECE_REFS)
    skipped = missing_references(wanted)
    res = Results(n=n, repeats=repeats, floor=floor, seed=seed, skipped=skipped)
    p, y = make_data(n, seed)
    if "verbcal" in wanted:
        res.split = fit_split(p, y, floor, repeats)
    for name in TS_REFS:
        if name not in wanted or name in skipped:
            continue
        med, t, times = timed(partial(TS_FUNCS[name], p, y, floor), repeats, warmup)
        res.ts[name] = {
            "time_s": med,
            "times": times,
            "temperature": t,
            "nll": nll_at(p, y, floor, t),
        }
    q = TemperatureScaling(floor=floor, prior_sd=None).fit(p, y).predict_proba(p)
    for name in ECE_REFS:
        if name not in wanted or name in skipped:
            continue
        fn = ECE_FUNCS[name]
        med, value, times = timed(partial(fn, p, y, N_BINS), repeats, warmup)
        res.ece[name] = {
            "time_s": med,
            "times": times,
            "grid": value,
            "grid_emulated": emulate(name, p, y),
            "calibrated": fn(q, y, N_BINS),
            "calibrated_emulated": emulate(name, q, y),
            "convention": CONVENTION[name],
        }
    return res


# ---------------------------------------------------------------- output


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def print_tables(res: Results) -> None:
    """Rich tables of times, ratios and values."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    summary = res.to_dict()
    ts = Table(
        title=f"Temperature fit: n = {res.n:,}, K = {K}, 0.05 grid, clip floor {res.floor:g}"
    )
    for col in ("implementation", "time (s)", "time / sklearn", "T", "NLL"):
        ts.add_column(col, justify="left" if col == "implementation" else "right")
    sk = res.ts.get("sklearn", {}).get("time_s")
    for name, r in res.ts.items():
        ratio = r["time_s"] / sk if sk else None
        ts.add_row(
            name,
            f"{r['time_s']:.4f}",
            _fmt(ratio, ".4f"),
            f"{r['temperature']:.10f}",
            f"{r['nll']:.12f}",
        )
    console.print(ts)
    console.print(
        "max relative difference across implementations: "
        f"T {summary['ts_max_rel_diff_temperature']:.2e}, NLL {summary['ts_max_rel_diff_nll']:.2e}"
    )
    if res.split:
        sp = Table(title="verbcal's temperature fit, stage by stage (median s), and the floors")
        for col in ("stage", "time (s)", "share of fit", "time / counting floor"):
            sp.add_column(col, justify="left" if col == "stage" else "right")
        total, floor_s = res.split["fit (total)"], res.split["counting floor"]
        for name, t in res.split.items():
            sp.add_row(name, f"{t:.4f}", f"{t / total:.2f}", f"{t / floor_s:.2f}")
        console.print(sp)
    ec = Table(title=f"Top-label ECE, {N_BINS} equal-width bins, n = {res.n:,}")
    for col in (
        "implementation",
        "time (s)",
        "time / bincount",
        "ECE grid P",
        "emulated",
        "ECE calibrated q",
        "emulated",
    ):
        ec.add_column(col, justify="left" if col == "implementation" else "right")
    bc = res.ece.get("bincount", {}).get("time_s")
    for name, r in res.ece.items():
        ratio = r["time_s"] / bc if bc else None
        values = (r[key] for key in ("grid", "grid_emulated", "calibrated", "calibrated_emulated"))
        ec.add_row(name, f"{r['time_s']:.4f}", _fmt(ratio, ".3f"), *(f"{v:.9f}" for v in values))
    console.print(ec)
    console.print(
        "'emulated': numpy recomputation under that library's own binning (and float32 for "
        "torchmetrics). On the grid, confidences 0.4, 0.6, 0.8 and 1.0 sit on edges k/15."
    )
    for name in res.ece:
        console.print(f"  {name}: {CONVENTION[name]}")
    speed = ", ".join(
        f"{k} = {_fmt(v, '.2f')}"
        for k, v in summary.items()
        if k.startswith(("ts_speedup", "ece_ratio"))
    )
    console.print(speed)
    for name, why in res.skipped.items():
        console.print(f"[yellow]skipped {name}: {why}[/yellow]")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--n", type=int, default=1_000_000, help="rows (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median (default 3)")
    parser.add_argument("--floor", type=float, default=EPS, help=f"clip floor (default {EPS:g})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    res = run(n=args.n, repeats=args.repeats, floor=args.floor, seed=args.seed)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
    else:
        print_tables(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
