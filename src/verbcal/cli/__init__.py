"""verbcal's command-line interface: a thin layer over the Python API."""

from __future__ import annotations

from verbcal.cli import bakeoff as _bakeoff  # noqa: F401  (registers commands)
from verbcal.cli import batch as _batch  # noqa: F401
from verbcal.cli import calibrate as _calibrate  # noqa: F401
from verbcal.cli import datasets as _datasets  # noqa: F401
from verbcal.cli import decide as _decide  # noqa: F401
from verbcal.cli import demo as _demo  # noqa: F401
from verbcal.cli import elicit as _elicit  # noqa: F401
from verbcal.cli import monitor as _monitor  # noqa: F401
from verbcal.cli import report as _report  # noqa: F401
from verbcal.cli import route as _route  # noqa: F401
from verbcal.cli import run as _run  # noqa: F401
from verbcal.cli import serve as _serve  # noqa: F401
from verbcal.cli import split as _split  # noqa: F401
from verbcal.cli import study as _study  # noqa: F401
from verbcal.cli.app import app
from verbcal.cli.helptext import reflow_help
from verbcal.cli.reading import add_reading_options

add_reading_options(app)
reflow_help(app)


def main() -> None:
    """Entry point of the ``verbcal`` command."""
    app()


__all__ = ["app", "main"]
