"""``verbcal split``: a labelled predictions file into calibration and test parts, as ``run`` splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from verbcal.cli import options as opt
from verbcal.cli.app import app, console, err_console
from verbcal.cli.calibrate import DataOption, LabelsOption, friendly_errors


@app.command()
def split(
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Directory for calibration.jsonl and test.jsonl.")],
    calib_frac: opt.CalibFrac = 0.5,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the split (as in `verbcal run`).")] = 0,
    labels: LabelsOption = None,
    overwrite: opt.Overwrite = False,
) -> None:
    """Split labelled predictions into calibration.jsonl and test.jsonl, stratified by label.

    The same --data, --calib-frac and --seed give exactly the split `verbcal run` makes
    (and writes into its run directory): fit on one part, evaluate on the other.

    Example: verbcal split --data recorded:tweets --calib-frac 0.5 --seed 0 --out parts
    """
    from verbcal.pipeline import RunError, split_file

    with friendly_errors():
        try:
            label_list = [s.strip() for s in labels.split(",")] if labels else None
            predictions, paths, calib, test = split_file(
                data, out, calib_frac, seed, labels=label_list, overwrite=overwrite
            )
        except RunError as exc:
            raise ValueError(str(exc)) from exc
    err_console.print(predictions.describe(), highlight=False, markup=False)
    left_out = len(predictions.records) - len(calib) - len(test)
    console.print(
        f"wrote {len(calib)} calibration records to {paths['calibration']} and {len(test)} "
        f"test records to {paths['test']}"
        + (
            f" ({left_out} records without a distribution or gold label left out)"
            if left_out
            else ""
        ),
        highlight=False,
        markup=False,
    )
