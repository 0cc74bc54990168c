"""Racing trials against the incumbent, the paired noise of the objective windows, and stopping on a stall."""

import dataclasses
import json
import math
import statistics

import pytest

from adaprune_edge.search.evaluators import LocalEvaluator
from adaprune_edge.search.objective import SearchContext
from adaprune_edge.search.race import Race, beats, chosen, paired_se
from adaprune_edge.search.run import run_search, stalled_for
from adaprune_edge.search.trials import TrialRecord
from test_search import _spec


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_paired_noise_is_the_standard_error_of_the_window_differences():
    a, b = [3.0, 3.4, 2.8, 3.1], [2.9, 3.2, 2.9, 3.0]
    d = [0.1, 0.2, -0.1, 0.1]
    assert paired_se(a, b) == pytest.approx(statistics.stdev(d) / 2, rel=1e-12)
    assert paired_se([1.0], [2.0]) == math.inf
    # a shared window difficulty cancels: a constant offset of 0.05 on every window is a real difference
    assert beats([x - 0.05 for x in b], b) and not beats([x - 0.05 + e for x, e in zip(b, (0.2, -0.2, 0.2, -0.2))], b)


def test_a_clearly_worse_trial_is_raced_out_and_costed_from_the_incumbent():
    race = Race(incumbent=(3.0, 3.2, 2.9, 3.1))
    assert not race.clearly_worse([9.0])  # never on one window
    assert race.clearly_worse([3.5, 3.8])  # +0.55 ± 0.05: 11 standard errors worse
    assert not race.clearly_worse([3.1, 3.1])  # +0.0 ± 0.1
    assert race.estimate([3.5, 3.8]) == pytest.approx(3.05 + 0.55, rel=1e-12)
    assert Race.from_dict(race.to_dict()) == race


def test_the_choice_moves_only_on_a_real_improvement():
    first = [3.0, 3.2, 2.9, 3.1]
    noisy_lower = [x - 0.02 + e for x, e in zip(first, (0.1, -0.1, 0.1, -0.1))]  # lower mean, within noise
    clearly = [x - 0.05 for x in first]  # lower on every window alike
    assert chosen([]) is None and chosen([first]) == 0
    assert chosen([first, noisy_lower]) == 0  # the lowest cost is not chosen: not better beyond the noise
    assert chosen([first, noisy_lower, clearly]) == 2
    assert Race(choice=tuple(first)).becomes_choice(clearly) and not Race(choice=tuple(first)).becomes_choice(noisy_lower)
    assert Race().becomes_choice(first)


def _rec(i, costs, origin="smac"):
    return TrialRecord(i, {}, "ok", sum(costs) / len(costs), None, None, None, 0.2, 0.1, 0, 1.0, 1.0, "", None, {},
                       len(costs), 1.0, False, window_costs=tuple(costs), origin=origin)


def test_stall_counts_trials_without_a_real_improvement_since_the_warm_starts():
    base = [3.0, 3.2, 2.9, 3.1]
    recs = [_rec(0, base, "warm"), _rec(1, [x + 0.3 for x in base], "warm")]
    assert stalled_for(recs) == 0
    recs.append(_rec(2, [x + 0.2 for x in base]))  # worse
    noisy = [x - 0.01 + e for x, e in zip(base, (0.1, -0.1, 0.1, -0.1))]
    recs.append(_rec(3, noisy))  # lower, within noise (it still becomes the incumbent)
    assert stalled_for(recs) == 2
    recs.append(_rec(4, [x - 0.05 for x in noisy]))  # beats the incumbent (trial 3) on every window alike
    assert stalled_for(recs) == 0
    recs.append(_rec(5, [9.0, 9.0]))  # raced out: fewer windows, no improvement
    assert stalled_for(recs) == 1


def test_search_stops_on_a_stall_and_races_out_clearly_worse_trials(tiny_dir, shared_data, tmp_path):
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", n_trials=14, val_windows=4, warm_start=False,
                 patience=2, rescore_top=0)
    ctx = SearchContext(spec)
    out = run_search(spec, tmp_path / "run", evaluator=LocalEvaluator(spec, ctx))
    recs = out.records
    assert out.stopped == "stalled" and len(recs) < 14 and stalled_for(recs) == 2 and stalled_for(recs[:-1]) == 1
    assert out.cost()["trials"] == len(recs) and out.cost()["seconds"] == pytest.approx(sum(r.seconds for r in recs), abs=0.05)
    for r in recs:
        if r.feasible and r.fidelity == 4:  # a full trial's cost is the mean of its window costs
            assert r.cost == pytest.approx(statistics.fmean(r.window_costs), rel=1e-12)
    # resumed with a larger patience, the search goes on from the same records
    more = run_search(dataclasses.replace(spec, patience=3), tmp_path / "run", resume=True,
                      evaluator=LocalEvaluator(spec, ctx))
    as_json = lambda rs: json.loads(json.dumps([r.to_dict() for r in rs]))  # noqa: E731
    assert as_json(more.records[: len(recs)]) == as_json(recs)
    assert len(more.records) > len(recs) or more.stopped == "trials"


def test_a_trial_far_behind_the_incumbent_stops_scoring_after_two_windows(tiny_dir, shared_data):
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", val_windows=4, rescore_top=1, rescore_windows=2)
    ctx = SearchContext(spec)
    from adaprune_edge.search.run import search_bounds
    from adaprune_edge.search.warmstart import warm_start_configs
    from adaprune_edge.search.space import build_space, plain

    values = plain(warm_start_configs(build_space(search_bounds(spec), 0), search_bounds(spec))[0])
    full = ctx.evaluate(0, values, race=Race())  # nothing to race against: all 4 windows, re-scored at once
    assert full.fidelity == 4 and len(full.window_costs) == 4 and full.rescore_windows == 2
    assert full.cost == pytest.approx(statistics.fmean(full.window_costs), rel=1e-12)
    assert full.rescore_cost == pytest.approx(ctx.rescore(full)[0], rel=1e-6)  # what a re-prune scores
    inc = tuple(c - 1.0 for c in full.window_costs)  # an incumbent 1 nat/token better on every window
    raced = ctx.evaluate(1, values, race=Race(inc, rescore_below=0.0))
    assert raced.fidelity == 2 and raced.window_costs == pytest.approx(full.window_costs[:2], rel=1e-9)
    assert raced.cost == pytest.approx(statistics.fmean(inc) + 1.0, rel=1e-9) and raced.rescore_windows == 0
