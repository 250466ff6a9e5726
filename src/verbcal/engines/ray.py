"""Calibration on Ray Data: ``map_batches`` over Arrow batches, the calibrator shipped once.

The fitted calibrator is put in Ray's object store once (``ray.put``); each worker process
fetches it once and then calibrates every batch it gets with
:func:`verbcal.engines.arrow.calibrate_table`, the same step as the local engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verbcal.calibrate import Calibrator
from verbcal.engines.arrow import (
    CalibratorSpec,
    calibrate_table,
    check_input,
    count_rows,
    input_error,
    load_calibrator,
    out_kind,
    write_ordered,
)
from verbcal.engines.ray_cluster import ray_session, require_ray
from verbcal.predictions import parquet_paths

_CALIBRATORS: dict[str, Calibrator] = {}
"""Calibrators rebuilt in this worker process, by object id (once per process)."""


def _calibrate_batch(batch: Any, shipped: list[Any]) -> Any:
    """The ``map_batches`` function: fetch the shipped calibrator once per worker, then apply it."""
    (ref,) = shipped  # wrapped in a list so Ray passes the reference, not a copy per task
    key = ref.hex()
    if key not in _CALIBRATORS:
        import ray

        _CALIBRATORS[key] = Calibrator.from_dict(ray.get(ref))
    return calibrate_table(batch, _CALIBRATORS[key])


def calibrate_dataset(
    dataset: Any, calibrator: CalibratorSpec, *, batch_size: int | None = None
) -> Any:
    """A ``ray.data.Dataset`` with calibrated probabilities, ``top_label`` and ``confidence``.

    Columns and layouts as in :mod:`verbcal.engines.arrow`. The calibrator is put in the
    object store once; each worker process fetches it once. ``map_batches`` runs as tasks
    (fused with the read), so it never holds CPUs that the read needs.
    """
    ray = require_ray()
    fitted = load_calibrator(calibrator)
    shipped = [ray.put(fitted.to_dict())]
    return dataset.map_batches(
        _calibrate_batch,
        fn_kwargs={"shipped": shipped},
        batch_format="pyarrow",
        batch_size=batch_size,
        zero_copy_batch=True,
    )


def apply_ray(
    calibrator: CalibratorSpec,
    data: str | Path,
    out: str | Path,
    out_format: str | None = None,
    address: str | None = None,
) -> int:
    """Calibrate Parquet ``data`` on Ray; one file in input order, or shards in a directory."""
    kind = out_kind(out, out_format)
    fitted = load_calibrator(calibrator)
    paths = [str(path) for path in parquet_paths(data)]
    check_input(paths, fitted)
    with ray_session(address) as ray:
        context = ray.data.DataContext.get_current()
        was = context.execution_options.preserve_order
        context.execution_options.preserve_order = kind != "dir"
        try:
            calibrated = calibrate_dataset(ray.data.read_parquet(paths), fitted)
            if kind != "dir":
                batches = calibrated.iter_batches(batch_format="pyarrow", batch_size=None)
                return write_ordered(batches, out, kind)
            if out_format == "parquet":
                calibrated.write_parquet(str(out))
            else:  # pandas writes 10 decimals by default: 15 keeps every engine within 1e-15
                calibrated.write_json(str(out), double_precision=15)
        except Exception as exc:
            raise (input_error(exc) or exc) from None
        finally:
            context.execution_options.preserve_order = was
    return count_rows(paths)
