"""Re-scoring the search's top trials on held-out windows after the report's, before the best is chosen."""

import dataclasses
import json

import pytest
import torch

from adaprune_edge.search.evaluators import LocalEvaluator
from adaprune_edge.search.objective import SearchContext
from adaprune_edge.search.rescore import RESCORED_FILE, Rescored, of_run, ranked, rescore_top
from adaprune_edge.search.race import chosen
from adaprune_edge.search.run import run_search
from test_search import _spec


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


class Counting(LocalEvaluator):
    """A LocalEvaluator that counts its re-scorings."""

    calls = 0

    def rescore(self, record):
        Counting.calls += 1
        return super().rescore(record)


def test_top_trials_are_rescored_once_on_unseen_windows(tiny_dir, shared_data, tmp_path):
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", n_trials=5, rescore_top=2, rescore_windows=3)
    ctx = SearchContext(spec)
    # the re-scoring windows come after the report's: no window of the objective or the report among them
    seen = {tuple(w.tolist()) for w in torch.cat([ctx.val, ctx.report_windows])}
    assert len(ctx.rescore_windows) == 3 and not seen & {tuple(w.tolist()) for w in ctx.rescore_windows}
    assert "re-scoring the top trials" in ctx.data_sets()["objective"].part
    assert ctx.data_sets()["objective"].windows == 2 + 3 and ctx.data_sets(rescoring=False)["objective"].windows == 2

    run = tmp_path / "run"
    Counting.calls = 0
    out = run_search(spec, run, evaluator=Counting(spec, ctx))
    ok = sorted((r for r in out.records if r.feasible), key=lambda r: r.cost)
    # every final top trial was scored on the re-scoring windows when it finished (race.py): none pruned again
    assert Counting.calls == 0 and [r.index for r in sorted(out.rescored, key=lambda r: r.cost)] == [r.index for r in ok[:2]]
    by = {r.index: r for r in out.records}
    for r in out.rescored:
        assert r.same_structure and r.windows == 2 and r.rescore_windows == 3
        assert r.combined == pytest.approx((2 * r.cost + 3 * r.rescore_cost) / 5, rel=1e-12)
        # the trial-time score is the one a re-prune of the recipe gets on the same windows
        cost, used, same, _ = ctx.rescore(by[r.index])
        assert same and used == 3 and r.rescore_cost == pytest.approx(cost, rel=1e-6)
    # the choice is the first trial not beaten beyond the objective windows' noise (race.chosen), then the
    # re-scored ones by combined cost
    full = [r for r in out.records if r.feasible and r.fidelity == 2]
    assert out.best == out.ranked()[0] == full[chosen([r.window_costs for r in full])]
    assert [r.index for r in out.ranked()[1:len(out.rescored)]] == \
        [r.index for r in sorted(out.rescored, key=lambda r: r.combined) if r.index != out.best.index][:len(out.rescored) - 1]
    assert len((run / RESCORED_FILE).read_text().splitlines()) == 2 and len(of_run(run)) == 2

    again = run_search(spec, run, resume=True, evaluator=Counting(spec, ctx))  # nothing is re-scored twice
    assert Counting.calls == 0 and again.best.index == out.best.index
    assert [r.to_dict() for r in again.rescored] == [r.to_dict() for r in out.rescored]


def test_rescoring_on_the_objective_windows_reproduces_the_trial_cost(tiny_dir, shared_data, tmp_path):
    """Re-pruning a trial's recipe at its solved ratio gives the same model: scored on the trial's own
    windows it has the trial's cost to float precision."""
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", n_trials=3, rescore_top=0)
    ctx = SearchContext(spec)
    out = run_search(spec, tmp_path / "run", evaluator=LocalEvaluator(spec, ctx))
    assert out.rescored == []
    ctx.rest = ctx.val  # re-score on the objective's own windows
    ctx.spec = dataclasses.replace(spec, rescore_top=1, rescore_windows=len(ctx.val))
    for rec in (r for r in out.records if r.feasible):
        cost, used, same, _ = ctx.rescore(rec)
        assert same and used == len(ctx.val) and cost == pytest.approx(rec.cost, rel=1e-6, abs=1e-6)


def test_ranked_puts_the_rescored_first_by_combined_cost(tiny_dir, shared_data, tmp_path):
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", n_trials=4, rescore_top=0)
    out = run_search(spec, tmp_path / "run", evaluator=LocalEvaluator(spec))
    ok = sorted((r for r in out.records if r.feasible), key=lambda r: r.cost)
    assert len(ok) >= 3
    # the second-best trial on its own windows is the best on the re-scoring windows: it ranks first
    fake = [Rescored(ok[0].index, ok[0].cost, 2, ok[0].cost + 1.0, 8, True, 0.0, 8),
            Rescored(ok[1].index, ok[1].cost, 2, ok[1].cost, 8, True, 0.0, 8)]
    order = ranked(out.records, fake)
    assert [r.index for r in order] == [ok[1].index, ok[0].index] + [r.index for r in ok[2:]]
    # stored lines of other window counts are not this run's re-scoring; a torn last line is skipped
    run = tmp_path / "run"
    (run / RESCORED_FILE).write_text(json.dumps(fake[0].to_dict()) + "\n" + '{"index": 9, "co')
    assert of_run(run) == []  # this run asked for no re-scoring (rescore_top 0) ...
    assert rescore_top(LocalEvaluator(spec), out.records, run, 0, 8) == []  # ... and re-scores nothing
    spec_json = json.loads((run / "search.json").read_text())
    (run / "search.json").write_text(json.dumps({**spec_json, "rescore_top": 2, "rescore_windows": 8}))
    assert of_run(run) == [fake[0]]  # asked for 8: the stored line is read back, the torn one skipped
    (run / "search.json").write_text(json.dumps({**spec_json, "rescore_top": 2, "rescore_windows": 4}))
    assert of_run(run) == []  # a line re-scored on another number of windows is not this run's
