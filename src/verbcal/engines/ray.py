"""Calibration on Ray: Parquet pieces as Ray tasks, or a ``ray.data.Dataset`` mapped in batches.

Two paths. :func:`calibrate_dataset` (a Ray Dataset in, one out) is a ``map_batches`` over
Arrow batches. :func:`apply_ray` (Parquet files in and out, ``verbcal apply --engine ray``)
runs one Ray task per piece of the input (file, row group) that reads it, calibrates it and
writes its shard with pyarrow, as the Spark engine does: no Ray Data reader, writer or
executor to start (their fixed cost outweighed the calibration on 2 cores, see
docs/scale.md).

In both, the fitted calibrator is put in Ray's object store once (``ray.put``); each worker
process fetches it once and calibrates with :func:`verbcal.engines.arrow.calibrate_table`,
the same step as the local engine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verbcal.calibration import Calibrator
from verbcal.engines.arrow import (
    CalibratorSpec,
    calibrate_piece,
    calibrate_table,
    check_input,
    input_error,
    load_calibrator,
    out_kind,
    parquet_pieces,
    shard_path,
    shipped_calibrator,
    write_ordered,
)
from verbcal.engines.ray_cluster import ray_session, require_ray
from verbcal.predictions import atomic_folder, parquet_paths


def _calibrator(shipped: list[Any]) -> Calibrator:
    """The shipped calibrator, fetched and rebuilt once per worker process."""
    import ray

    (ref,) = shipped  # wrapped in a list so Ray passes the reference, not a copy per task
    return shipped_calibrator(ref.hex(), lambda: ray.get(ref))


def _calibrate_batch(batch: Any, shipped: list[Any]) -> Any:
    """The ``map_batches`` function of :func:`calibrate_dataset`."""
    return calibrate_table(batch, _calibrator(shipped))


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


def _calibrate_piece(
    shipped: list[Any], path: str, group: int, shard: str | None = None, out_format: str = ""
) -> Any:
    """The task of one piece: its shard's row count, or (``shard`` None) its calibrated table."""
    tables = calibrate_piece(path, group, _calibrator(shipped))
    if shard is None:
        import pyarrow as pa

        return pa.concat_tables(tables)
    return write_ordered(tables, shard, out_format)


def apply_ray(
    calibrator: CalibratorSpec,
    data: str | Path,
    out: str | Path,
    out_format: str | None = None,
    address: str | None = None,
) -> int:
    """Calibrate Parquet ``data`` on Ray, one task per piece; return the rows written.

    A directory ``out`` gets one shard per piece, written by the task (workers must see
    ``out``, as they see ``data``); one ``.jsonl`` or ``.parquet`` file is written by the
    driver from the pieces' tables in input order, a few pieces ahead of the writer.
    """
    kind = out_kind(out, out_format)
    fitted = load_calibrator(calibrator)
    paths = [str(path) for path in parquet_paths(data)]
    check_input(paths, fitted)
    pieces = parquet_pieces(paths)
    with ray_session(address) as ray:
        shipped = [ray.put(fitted.to_dict())]
        task = ray.remote(_calibrate_piece)
        try:
            if kind == "dir":
                assert out_format is not None
                with atomic_folder(Path(out).resolve()) as folder:
                    shards = [str(shard_path(folder, i, out_format)) for i in range(len(pieces))]
                    calls = zip(pieces, shards, strict=True)
                    refs = [
                        task.remote(shipped, *piece, shard, out_format) for piece, shard in calls
                    ]
                    try:
                        return sum(ray.get(refs))
                    except Exception:
                        # ray.get raises at the first failed task while others still write
                        # into the folder: let every task end before atomic_folder removes it
                        ray.wait(refs, num_returns=len(refs))
                        raise
            ahead = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
            submit = (task.remote(shipped, *piece) for piece in pieces)
            return write_ordered(_in_order(ray, submit, ahead), out, kind)
        except Exception as exc:
            raise (input_error(exc) or exc) from None


def _in_order(ray: Any, refs: Iterator[Any], ahead: int) -> Iterator[Any]:
    """The results of ``refs`` in order, keeping ``ahead`` tasks submitted beyond the one awaited."""
    waiting: deque[Any] = deque()
    for ref in refs:
        waiting.append(ref)
        if len(waiting) > ahead:
            yield ray.get(waiting.popleft())
    while waiting:
        yield ray.get(waiting.popleft())
