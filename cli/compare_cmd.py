"""`adaprune-edge compare`: several `eval --out` reports side by side, with retention vs the first."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer
from rich.table import Table

from adaprune_edge.cli.common import cli_errors, console
from adaprune_edge.errors import ConfigError
from adaprune_edge.evaluate.report import EvalReport, read_report, retention

# (row label, value getter, lower is better, show retention)
Row = tuple[str, Callable[[EvalReport], Optional[float]], bool, bool]


def _rows(reports: list[EvalReport]) -> list[Row]:
    rows: list[Row] = []
    names = list(dict.fromkeys(t.task for r in reports for t in r.tasks))
    for name in names:
        rows.append((f"{name} acc", lambda r, n=name: getattr(r.task(n), "acc", None), False, True))
        if any(getattr(r.task(name), "acc_norm", None) is not None for r in reports):
            rows.append((f"{name} acc_norm", lambda r, n=name: getattr(r.task(n), "acc_norm", None), False, True))
    rows.append(("perplexity", lambda r: r.windows.ppl if r.windows else None, True, True))
    rows.append(("KL vs baseline", lambda r: r.windows.kl_mean if r.windows else None, True, False))
    rows.append(("top-1 agreement", lambda r: r.windows.top1_agreement if r.windows else None, False, False))
    return rows


def _mean_retention(reports: list[EvalReport], rows: list[Row], i: int) -> Optional[float]:
    """Mean retention over the accuracy rows both reports have (None for the first)."""
    vals = [retention(get(reports[i]), get(reports[0]), low) for label, get, low, ret in rows
            if ret and label.endswith("acc")]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals and i > 0 else None


def _cell(value: Optional[float], base: Optional[float], lower: bool, show: bool, first: bool) -> str:
    if value is None:
        return "–"
    text = f"{value:.3f}" if lower else f"{value:.4f}"
    r = retention(value, base, lower) if show and not first else None
    return text + (f" ({r:.1f}%)" if r is not None else "")


def compare_table(reports: list[EvalReport], labels: list[str]) -> Table:
    table = Table(title="comparison (retention: % of the first report; perplexity as first/this)")
    table.add_column("metric", style="bold")
    for label in labels:
        table.add_column(label, justify="right", overflow="fold")
    rows = [r for r in _rows(reports) if any(r[1](rep) is not None for rep in reports)]
    for label, get, lower, show in rows:
        base = get(reports[0])
        table.add_row(label, *[_cell(get(rep), base, lower, show, i == 0) for i, rep in enumerate(reports)])
    means = [_mean_retention(reports, rows, i) for i in range(len(reports))]
    table.add_row("mean acc retention", *["–" if m is None else f"{m:.1f}%" for m in means], style="italic")
    return table


@cli_errors
def compare_cmd(
    reports: list[Path] = typer.Argument(..., help="Two or more `eval --out` JSON files; the first is the reference (dense)."),
) -> None:
    """Show several eval reports side by side with retention (% of the first, usually the dense model)."""
    if len(reports) < 2:
        raise ConfigError("compare needs at least two reports (the first is the reference)")
    loaded = [read_report(p) for p in reports]
    labels = [f"{p.stem}\n{r.model} ({r.backend})" for p, r in zip(reports, loaded)]
    console.print(compare_table(loaded, labels))
