"""The trade-off figure: its Pareto front, readable log ticks, labelled points."""

import matplotlib

matplotlib.use("Agg")

from adaprune_edge.pipeline import plots  # noqa: E402


def test_pareto_front_keeps_points_nothing_beats_on_both():
    pts = [(3.0, 6.0), (1.0, 5.0), (2.0, 4.0), (4.0, 3.0), (2.5, 4.5)]
    assert plots.pareto_front(pts) == [(1.0, 5.0), (2.0, 4.0), (4.0, 3.0)]


def test_log_axes_read_as_plain_numbers(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    seen = {}
    real_save = plots._save

    def keep(fig, path):
        ax = fig.axes[0]
        fig.canvas.draw()
        seen["y"] = [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]
        seen["x"] = [t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text()]
        seen["notes"] = [t.get_text() for t in ax.texts]
        seen["xlabel"], seen["ylabel"] = ax.get_xlabel(), ax.get_ylabel()
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    series = [{"label": "recipes", "ms": [11.0, 15.0, 16.0], "quality": [5.8, 5.9, 6.3], "names": ["A", "B", "C"]}]
    plots.tradeoff_png(tmp_path / "t.png", series, budget_ms=100.0, chosen={"ms": 11.0, "quality": 5.7, "label": "shipped A"},
                       ylabel="perplexity, objective windows", front=True)
    plt.close("all")
    assert (tmp_path / "t.png").stat().st_size > 10_000
    assert seen["y"] and not any("times" in t or "^" in t for t in seen["y"]), seen["y"]  # no 5.8×10^0
    assert "10" in seen["x"] and "100" in seen["x"] and "log scale" in seen["xlabel"]
    assert {"A", "B", "C", "shipped A"} <= set(seen["notes"]) and seen["ylabel"] == "perplexity, objective windows"


def test_labels_of_close_points_stack_instead_of_overlapping():
    # Q6_K and Q8_0 at 15.5 / 16.3 ms with the same PPL (the main job's plot): the second label moves up a slot;
    # a point beside the dense and shipped points starts two slots up; a far point keeps the first slot
    pts = [(15.5, 4.73), (16.3, 4.73), (11.46, 4.71), (12.2, 4.88)]
    assert plots.label_offsets(pts, fixed=[(11.46, 4.71), (11.46, 4.712)]) == [3, 13, 23, 3]
