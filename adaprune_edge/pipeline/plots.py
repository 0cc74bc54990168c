"""Trade-off figures (matplotlib, Agg): decode latency vs quality, budget line, chosen point marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from adaprune_edge.runs import atomic_path


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def tradeoff_png(path: Path, series: Sequence[dict[str, Any]], *, budget_ms: float | None = None,
                 chosen: dict[str, Any] | None = None, dense: dict[str, Any] | None = None,
                 title: str = "", ylabel: str = "held-out perplexity") -> Path:
    """series: [{'label', 'ms': [...], 'quality': [...], 'style': 'o'|'-o'}]; chosen/dense: {'ms', 'quality', 'label'}."""
    fig, ax = _figure()
    for s in series:
        ax.plot(s["ms"], s["quality"], s.get("style", "o"), label=s["label"], alpha=s.get("alpha", 0.8),
                markersize=s.get("size", 6))
    if dense:
        ax.plot([dense["ms"]], [dense["quality"]], "s", color="black", markersize=9, label=dense.get("label", "dense"))
    if chosen:
        ax.plot([chosen["ms"]], [chosen["quality"]], "*", color="crimson", markersize=18,
                label=chosen.get("label", "chosen"), zorder=5)
    if budget_ms is not None:
        ax.axvline(budget_ms, color="crimson", linestyle="--", linewidth=1.2, label=f"budget {budget_ms:g} ms/token")
    ax.set_xlabel("decode latency (ms/token)")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)
