"""Trade-off figures (matplotlib, Agg): decode latency vs quality, budget line, chosen point marked."""

from __future__ import annotations

import math
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
                 title: str = "", ylabel: str = "held-out perplexity", front: bool = False) -> Path:
    """series: [{'label', 'ms': [...], 'quality': [...], 'style': 'o'|'-o', 'names': [...] (optional: each point
    annotated)}]; chosen/dense: {'ms', 'quality', 'label', 'tag' (optional: a short annotation; the legend has
    the label)}. `front`: the Pareto front over
    every plotted point (lower latency and lower quality value are both better) drawn as a step line."""
    fig, ax = _figure()
    named = [(x, y, n) for s in series for x, y, n in zip(s["ms"], s["quality"], s.get("names", ())) if n and y is not None]
    fixed = [(p["ms"], p["quality"]) for p in (dense, chosen) if p]
    for s in series:
        ax.plot(s["ms"], s["quality"], s.get("style", "o"), label=s["label"], alpha=s.get("alpha", 0.8),
                markersize=s.get("size", 6))
    for (x, y, name), dy in zip(named, label_offsets([(x, y) for x, y, _ in named], fixed)):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, dy), fontsize=6.5, alpha=0.85)
    for point, style, dy in ((dense, dict(marker="s", color="black", markersize=9), 8),
                             (chosen, dict(marker="*", color="crimson", markersize=18, zorder=5), -12)):
        if point:
            ax.plot([point["ms"]], [point["quality"]], linestyle="none", label=point.get("label"), **style)
            ax.annotate(point.get("tag") or point.get("label", ""), (point["ms"], point["quality"]), textcoords="offset points",
                        xytext=(8, dy), fontsize=7, fontweight="bold")
    if front:
        pts = [(x, y) for s in series for x, y in zip(s["ms"], s["quality"]) if y is not None]
        pts += [(p["ms"], p["quality"]) for p in (chosen, dense) if p]
        f = pareto_front(pts)
        if len(f) > 1:
            ax.step([x for x, _ in f], [y for _, y in f], where="post", color="gray", linestyle=":",
                    linewidth=1.3, label="Pareto front (faster and better)")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="crimson", linestyle="--", linewidth=1.2, label=f"budget {budget_ms:g} ms/token")
    xs = [x for s in series for x in s["ms"]] + [p["ms"] for p in (chosen, dense) if p] + ([budget_ms] if budget_ms else [])
    ax.set_xlabel("decode latency (ms/token)" + (", log scale" if _log_x(ax, xs) else ""))
    ax.set_ylabel(ylabel)
    _readable_log_axis(ax)
    ax.margins(y=0.12)  # room for the labels of the dense and shipped points
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def label_offsets(points: Sequence[tuple[float, float]], fixed: Sequence[tuple[float, float]] = ()) -> list[int]:
    """Vertical offsets (typographic points) for the labels of `points`, so labels of points that sit close
    together stack instead of printing over each other: a point within 8% (in latency) and 6% of the quality
    range of k earlier points — the `fixed` ones (dense, shipped: labelled apart) count too — gets slot k."""
    ys = [y for _, y in list(points) + list(fixed)]
    span = (max(ys) - min(ys)) or 1.0 if ys else 1.0
    placed, out = list(fixed), []
    for x, y in points:
        k = sum(1 for px, py in placed if abs(math.log(x / px)) < 0.08 and abs(y - py) < 0.06 * span)
        out.append(3 + 10 * k)
        placed.append((x, y))
    return out


def pareto_front(points: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The points (x, y, anything else, e.g. a label) no other point beats on both x and y (lower is better
    for both), sorted by x."""
    front, best = [], float("inf")
    for pt in sorted(points):
        if pt[1] < best:
            front.append(pt)
            best = pt[1]
    return front


def _log_x(ax: Any, xs: Sequence[float]) -> bool:
    """A log x axis with plain tick labels when the values span more than 4x (a far budget line would
    otherwise squeeze every point into one corner); True when it did."""
    from matplotlib.ticker import FuncFormatter

    xs = [x for x in xs if x and x > 0]
    if not xs or max(xs) / min(xs) <= 4:
        return False
    ax.set_xscale("log")
    ax.set_xlim(10 ** math.floor(math.log10(min(xs) * 0.95)), max(xs) * 1.1)  # from a labelled decade
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    return True


def _readable_log_axis(ax: Any) -> None:
    """A log y axis whose ticks read as plain numbers (5.8, 6, 7), not 5.8×10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), numticks=12))
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
