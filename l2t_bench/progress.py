"""Progress of a benchmark: a rich bar on a terminal, one plain line per finished run otherwise.

A bar redrawn in place is noise in a CI log, a ``nohup`` file or a pipe; there each finished (or
failed) run prints one line instead, whichever backend ran it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from l2t_bench.config import RunSpec


def run_label(run: RunSpec) -> str:
    return f"{run.task.label} · {run.teacher.label} · seed {run.seed}"


class BenchProgress:
    """Reports runs as they start and end; ``live`` (default: the console is a terminal) picks the bar.

    ``quiet`` silences both the bar and the lines; failures are still listed in the summary.
    """

    def __init__(self, total: int, done: int, console: Optional[Console] = None, *, quiet: bool = False, live: Optional[bool] = None) -> None:
        self.console = console or Console()
        self.total, self.done, self.quiet = total, done, quiet
        self.live = self.console.is_terminal if live is None else live
        self._start = time.perf_counter()
        self._bar: Optional[Progress] = None
        if self.live and not quiet:
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console,
            )
            self._runs = self._bar.add_task("runs", total=total, completed=done)

    def __enter__(self) -> "BenchProgress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def started(self, run: RunSpec) -> None:
        """A run began (the local backend runs one at a time: the bar names it)."""
        if self._bar is not None:
            self._bar.update(self._runs, description=run_label(run))

    def finished(self, run: RunSpec, record: dict) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._runs)
        elif not self.quiet:
            acc = record.get("test_acc")
            acc_text = f"{acc:.3f}" if isinstance(acc, float) else str(acc)
            self._line(f"{run_label(run)}: test_acc {acc_text}, {record.get('wall_time', 0.0):.1f} s")

    def failed(self, run: RunSpec, error: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._runs)
            self.console.print(f"[red]FAILED[/] {escape(run_label(run))}: {escape(error)}")
        elif not self.quiet:
            self._line(f"{run_label(run)}: FAILED {error}")

    def _line(self, text: str) -> None:
        elapsed = time.perf_counter() - self._start
        self.console.print(f"[{self.done}/{self.total}] {text} ({elapsed:.0f} s elapsed)", markup=False, highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        """A line of its own without a terminal (e.g. a pretraining episode); nothing on a bar."""
        if self._bar is None and not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def training(self, what: str, total: int) -> Callable[[int, int], None]:
        """A teacher is trained or pretrained: a sub-bar on a terminal, one line at start otherwise."""
        if self._bar is None:
            self.note(f"{what} ({total} steps)")
            return lambda done, total: None
        bar = self._bar.add_task(f"training {what}", total=total or 1)
        self._training = bar
        return lambda done, total: self._bar.update(bar, completed=done, total=total)

    def training_done(self) -> None:
        if self._bar is not None and getattr(self, "_training", None) is not None:
            self._bar.remove_task(self._training)
            self._training = None
