"""A rich progress bar with throughput, ETA and a count per reply status."""

from __future__ import annotations

from collections import Counter
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

STATUS_STYLE = {
    "ok": "green",
    "repaired": "yellow",
    "failed": "red",
    "error": "bold red",
    "logprobs": "cyan",
    "refused": "magenta",
}


class StatusProgress:
    """Counts outcomes by status; shows them on a live bar when ``enabled``."""

    def __init__(self, total: int, console: Console | None, enabled: bool = True) -> None:
        self.counts: Counter[str] = Counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if enabled and total:
            self._progress = Progress(
                TextColumn("[bold]eliciting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[counts]}"),
                console=console,
            )
            self._task = self._progress.add_task("elicit", total=total, rate="", counts="")

    def __enter__(self) -> StatusProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, status: str) -> None:
        """Count one finished request."""
        self.counts[status] += 1
        if self._progress is None or self._task is None:
            return
        task = self._progress.tasks[0]
        speed = task.speed
        rate = f"{speed:.1f} req/s" if speed else ""
        counts = " ".join(
            f"[{STATUS_STYLE.get(k, 'white')}]{k} {v}[/]" for k, v in sorted(self.counts.items())
        )
        self._progress.update(self._task, advance=1, rate=rate, counts=counts)
