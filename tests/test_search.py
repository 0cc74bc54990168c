"""SMAC search on a tiny random Llama (with the real SmolLM2 tokenizer so calibration text is real)."""

import dataclasses
import json
import math

import pytest
import torch

from adaprune_edge import profiles
from adaprune_edge.device import Device
from adaprune_edge.latency.budget import solve
from adaprune_edge.latency.predictor import Predictor
from adaprune_edge.latency.roofline import predict
from adaprune_edge.search.evaluators import LocalEvaluator
from adaprune_edge.search.spec import SearchSpec
from adaprune_edge.search.objective import SearchContext
from adaprune_edge.search.race import chosen
from adaprune_edge.search.run import run_search
from adaprune_edge.search.space import SpaceBounds
from adaprune_edge.archs.structure import Structure
from adaprune_edge.search.trials import TrialStore
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def _spec(tiny_dir, text, n_trials=6, **kw):
    from adaprune_edge.models import load

    profile = profiles.load_profile("this-host")
    base = Structure.from_model(load(str(tiny_dir)).model)
    from adaprune_edge.latency.budget import uniform

    dense_ms = predict(base, R("Q8_0"), profile).decode_ms_per_token
    floor_ms = predict(uniform(base, 0.6, R("Q8_0")), R("Q8_0"), profile).decode_ms_per_token
    budget = floor_ms + 0.6 * (dense_ms - floor_ms)  # the embedding dominates a tiny model's bytes
    r_min = solve(base, profile, Predictor.of(profile, R("Q8_0")), decode_ms=budget).ratio
    bounds = SpaceBounds(r_min=min(r_min, 0.3), r_max=0.6, min_samples=2, max_samples=8, min_seq_len=16,
                         max_seq_len=64, max_protect_first=1, max_protect_last=1)
    return SearchSpec(model=str(tiny_dir), device=Device.of(profile), quant=R("Q8_0"), bounds=bounds,
                      calib=(str(text),), val_seq_len=64, budget_ms=budget, n_trials=n_trials,
                      seed=3, **{"val_windows": 2, **kw})


def test_search_resumes_without_repeating_and_respects_budget(tiny_dir, shared_data, tmp_path):
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt")
    ev = LocalEvaluator(spec)
    run = tmp_path / "run"

    def stop_after_3(rec, records):
        if len(records) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(spec, run, evaluator=ev, on_trial=stop_after_3)
    assert len(TrialStore(run).records()) == 3
    out = run_search(spec, run, resume=True, evaluator=LocalEvaluator(spec, ev.context))
    assert out.new_trials == 3 and len(out.records) == 6
    keys = {json.dumps(r.values, sort_keys=True) for r in out.records}
    assert len(keys) == 6, "a configuration was evaluated twice"
    assert [r.index for r in out.records] == list(range(6))
    for r in out.records:
        if r.status == "ok":
            assert r.decode_ms <= spec.budget_ms + 1e-9 and r.cost == pytest.approx(r.loss, rel=1e-9)
            assert abs(r.loss - math.log(49152)) < 0.25  # a random tiny model predicts ~uniformly
        else:
            assert r.cost >= 50 and r.loss is None
    assert out.best is not None and out.best.feasible
    # the top 3 are re-scored; the best is the first trial no later one beats beyond the noise (race.chosen)
    top3 = sorted(r.cost for r in out.records if r.feasible)[:3]
    assert sorted(r.cost for r in out.rescored) == top3
    full = [r for r in out.records if r.feasible and r.fidelity == 2]
    assert out.best == full[chosen([r.window_costs for r in full])] == out.ranked()[0]
    assert (run / "trials.csv").read_text().count("\n") == 7


def test_resume_refuses_foreign_or_changed_run(tiny_dir, shared_data, tmp_path):
    from adaprune_edge.errors import ConfigError, OutputExistsError

    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", n_trials=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        run_search(spec, run)
    with pytest.raises(ConfigError, match="not an adaprune-edge search run"):
        run_search(spec, run, resume=True)
    assert (run / "notes.txt").read_text() == "mine"
    (run / "search.json").write_text(json.dumps({**spec.to_dict(), "seed": 99}))
    with pytest.raises(ConfigError, match="different settings.*seed"):
        run_search(spec, run, resume=True)


def test_kl_objective_is_zero_for_the_dense_model(tiny_dir, shared_data):
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", objective="kl")
    ctx = SearchContext(spec)
    loss, kl, costs = ctx._score(ctx.model, ctx.val[:2], "objective", spec.quant)
    assert kl == pytest.approx(0.0, abs=1e-3) and costs == pytest.approx((0.0, 0.0), abs=1e-3)
    with torch.no_grad():  # the loss is the model's own mean next-token NLL over the windows
        own = [ctx.model(input_ids=w[None], labels=w[None]).loss.item() for w in ctx.val[:2]]
    assert loss == pytest.approx(sum(own) / 2, rel=1e-5)


def test_two_worker_dask_search_shuts_down(tiny_dir, shared_data, tmp_path):
    from adaprune_edge.search.cluster import dask_client
    from adaprune_edge.search.evaluators import DaskEvaluator

    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", n_trials=4, workers=2)
    with dask_client(workers=2) as client:
        out = run_search(spec, tmp_path / "run", evaluator=DaskEvaluator(spec, client))
        assert client.status == "running"
    assert client.status == "closed"
    assert len(out.records) == 4 and len({json.dumps(r.values, sort_keys=True) for r in out.records}) == 4


def test_bounds_leave_half_the_decoder_prunable(tiny_dir):
    """A 4-layer model may protect at most one first and one last layer (protecting all of them made
    every trial of a CI search miss the budget); the 30-layer default keeps the full range."""
    from adaprune_edge.search.space import build_space
    from adaprune_edge.search.spec import family_bounds

    wide = SpaceBounds(r_min=0.1, r_max=0.6, max_protect_first=4, max_protect_last=2)
    tiny = family_bounds(wide, str(tiny_dir))
    assert (tiny.max_protect_first, tiny.max_protect_last) == (1, 1)
    space = build_space(tiny, seed=0)
    assert all(c["protect_first"] + c["protect_last"] <= 2 for c in space.sample_configuration(50))
    one_layer = family_bounds(dataclasses.replace(wide, max_protect_first=0, max_protect_last=0), str(tiny_dir))
    assert build_space(one_layer, seed=0)["protect_first"].value == 0  # a constant, not an empty range


def test_warm_starts_are_asked_first_cheapest_first(tiny_dir, tmp_path):
    """A search cut by walltime must have evaluated the fixed recipes before SMAC's random points."""
    from smac.runhistory.dataclasses import TrialValue

    from adaprune_edge.search.run import make_optimizer
    from adaprune_edge.search.warmstart import DEFAULT_WARM_STARTS, WARM_STARTS
    from adaprune_edge.search.space import build_space, plain

    spec = SearchSpec(model=str(tiny_dir), device=Device.resolve("this-host"), quant=R("Q8_0"),
                      bounds=SpaceBounds(r_min=0.1, r_max=0.6), calib=("unused",), n_trials=20, seed=0)
    space = build_space(spec.bounds, seed=0)
    opt = make_optimizer(spec, space, spec.bounds, tmp_path / "smac")
    asked = []
    for i in range(len(DEFAULT_WARM_STARTS) + 2):
        info = opt.ask()
        asked.append(plain(info.config))
        opt.tell(info, TrialValue(cost=float(i)))
    for values, name in zip(asked, DEFAULT_WARM_STARTS):
        assert all(values[k] == v for k, v in WARM_STARTS[name].items()), name
    assert DEFAULT_WARM_STARTS[-1] == "obs-uniform-seq"  # the sequential OBS recipe is the slowest: last
