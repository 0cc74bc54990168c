"""A progress bar for `builtin:self` (text sampled from the model; only the first time per model)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adaprune_edge.cli.common import err_console


@contextlib.contextmanager
def sampling_bar() -> Iterator[Callable[[int, int, str], None]]:
    """Yields progress(done, total, note): a bar over sampled tokens; total 0 = a one-line note."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
               TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task: list[int] = []

        def step(done: int, total: int, note: str) -> None:
            if total == 0:
                bar.console.print(f"[yellow]{note}[/]")
                return
            if not task:
                task.append(bar.add_task("sampling calibration text from the model (cached after this)", total=total))
            bar.update(task[0], completed=done, total=total)

        yield step
