"""The quant recipe as a dimension of the search (SearchSpec.quants): each trial solves its ratio at its own
recipe and pays that recipe's measured penalty; the build passes its feasible candidates and ships the
best trial's recipe. On a memory-bound device profile, so that 4-bit weights need less pruning than 8-bit."""

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest

from adaprune_edge.pipeline.context import BuildContext
from adaprune_edge.pipeline.plan_stages import quant_choices
from adaprune_edge.pipeline.prune_stages import confirmed_best
from adaprune_edge.pipeline.quant_options import QuantOption
from adaprune_edge.pipeline.state import BuildState
from adaprune_edge.device import Device
from adaprune_edge.prune.engine import PruneConfig
from adaprune_edge.search.evaluators import LocalEvaluator
from adaprune_edge.search.ratio import TOL, predicted_fit
from adaprune_edge.search.run import run_search
from adaprune_edge.search.space import SpaceBounds, build_space
from adaprune_edge.search.spec import QuantChoice, SearchSpec
from adaprune_edge.search.trials import TrialStore
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

BUDGET_MS = 3.9  # predicted on MEMORY_BOUND: Q4_0 needs ~5% of the decoder pruned, Q8_0 ~50%
MEMORY_BOUND = "extends: this-host\nbackend: predict\nmem_bandwidth_gbs: 2.0\ndecode_gflops: 0\noverhead_ms_per_layer: 0\n"
PENALTY = {R("Q8_0"): 0.01, R("Q4_0"): 0.3}  # nats/token: log(PPL at the recipe / PPL F16), as the build measures
N_TRIALS = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import save_tiny_model

    root = tmp_path_factory.mktemp("quants")
    model = save_tiny_model(root / "tiny", hidden=128, heads=4, kv_heads=2, ffn=1024, layers=4)
    (root / "mem.yaml").write_text(MEMORY_BOUND)
    return model, root / "mem.yaml"


def _bounds():
    return SpaceBounds(r_min=0.05, r_max=0.7, min_samples=2, max_samples=8, min_seq_len=16, max_seq_len=64,
                       max_protect_first=1, max_protect_last=1)


def _spec(tiny, text, **kw):
    model, dev = tiny
    quants = tuple(QuantChoice(q, p) for q, p in PENALTY.items())
    return SearchSpec(model=str(model), device=Device.resolve(str(dev)), quant=R("Q8_0"), bounds=_bounds(),
                      calib=(str(text),), val_windows=2, val_seq_len=64, budget_ms=BUDGET_MS, warm_start=False,
                      n_trials=N_TRIALS, seed=1, quants=quants, **{"patience": 0, **kw})


def test_single_recipe_specs_are_unchanged(tiny):
    spec = dataclasses.replace(_spec(tiny, "x"), quants=())
    d = spec.to_dict()
    assert "quants" not in d and d["kind"] == "adaprune-edge/search-v2"  # old runs resume against it
    assert SearchSpec.from_dict(d) == spec and "quant" not in build_space(spec.bounds, 0, spec.searched_quants())
    one = dataclasses.replace(spec, quants=(QuantChoice(R("Q8_0"), 0.2),))
    assert one.searched_quants() == () and one.quant_penalty(R("Q8_0")) == 0.0 and one.quant_of({"quant": "Q4_0"}) == R("Q8_0")
    two = _spec(tiny, "x")
    assert SearchSpec.from_dict(json.loads(json.dumps(two.to_dict()))) == two
    space = build_space(two.bounds, 0, two.searched_quants())
    assert space["quant"].default_value == "Q8_0" and set(space["quant"].choices) == {q.name for q in PENALTY}
    with pytest.raises(Exception, match="include the spec's quant"):
        dataclasses.replace(two, quant=R("Q6_K")).check()


def test_each_trial_meets_the_budget_at_its_own_quant_and_pays_its_penalty(tiny, shared_data, tmp_path):
    spec = _spec(tiny, shared_data / "wikitext-2/valid.txt")
    ev, run = LocalEvaluator(spec), tmp_path / "run"

    def stop_after_4(rec, records):
        if len(records) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_search(spec, run, evaluator=ev, on_trial=stop_after_4)
    before = (run / "trials.jsonl").read_text().splitlines()
    out = run_search(spec, run, resume=True, evaluator=LocalEvaluator(spec, ev.context))
    assert len(out.records) == N_TRIALS and (run / "trials.jsonl").read_text().splitlines()[:4] == before
    ctx = ev.context
    ok = [r for r in out.records if r.feasible]
    assert {r.quant for r in ok} == set(PENALTY), "the search never tried one of the quant recipes"
    for r in out.records:
        assert r.quant.name == r.values["quant"]  # resumed records keep their own quant
    for r in ok:
        fits = predicted_fit(ctx.device.predictor(r.quant), spec.profile, BUDGET_MS)
        assert r.decode_ms <= BUDGET_MS and fits(r.structure)[0]
        assert r.cost == pytest.approx(r.loss + PENALTY[r.quant], rel=1e-12)  # the additive penalty
        cfg = PruneConfig.from_dict(r.prune_config)
        other = R("Q4_0") if r.quant == R("Q8_0") else R("Q8_0")
        there = ctx.solve(cfg, ctx.calibration(cfg, [1.0]), other).ratio  # the same recipe at the other quant
        low, high = (r.solved_ratio, there) if r.quant == R("Q4_0") else (there, r.solved_ratio)
        assert low + 10 * TOL < high, (r.summary(), low, high)
    assert max(r.solved_ratio for r in ok if r.quant == R("Q4_0")) < min(r.solved_ratio for r in ok if r.quant == R("Q8_0"))
    assert "quant" in (run / "trials.csv").read_text().splitlines()[0].split(",")
    # records written before quants were recorded read as the spec's quant
    old = [json.loads(x) for x in before]
    for d in old:
        d.pop("quant")
    (run / "trials.jsonl").write_text("".join(json.dumps(d) + "\n" for d in old))
    assert {r.quant for r in TrialStore(run).records(spec.quant)} == {R("Q8_0")}
    # the build re-measures the incumbent at the trial's own quant
    bctx = SimpleNamespace(device=ctx.device, profile=spec.profile, spec=SimpleNamespace(budget_ms=BUDGET_MS),
                           plan=SimpleNamespace(quant=R("Q8_0")))
    best, checked = confirmed_best(bctx, out.ranked())
    assert best == out.best and checked[0].quant == best.quant


def _option(recipe, r_min, ppl):
    return QuantOption(recipe, 5.0, False, r_min, 1000, 4.5, ppl)


def test_build_searches_over_the_candidates_that_can_win(tiny):
    model, dev = tiny
    opts = [_option(R("Q8_0"), 0.4, 10.5), _option(R("Q4_K_M"), 0.1, 11.0), _option(R("Q4_0"), 0.05, 12.5),
            _option(R("Q3_K_M"), 0.0, 12.0),   # quant-only: the file export compares against
            _option(R("Q2_K"), None, 30.0),     # cannot reach the budget within max ratio
            _option(R("Q6_K"), 0.75, 10.2),     # beyond the plan's max ratio
            _option(R("IQ4_NL"), 0.2, None)]    # not scored
    plan = SimpleNamespace(quant=R("Q4_K_M"), latency_scale=1.3, bounds=_bounds())
    choices = quant_choices(SimpleNamespace(), opts, 10.0, plan)
    assert [c.recipe for c in choices] == [R("Q4_K_M"), R("Q8_0")]  # Q4_0 scores worse than quant-only Q3_K_M
    assert choices[0].latency_scale == 1.3 and choices[1].latency_scale == 1.0
    assert choices[0].penalty == pytest.approx(math.log(1.1), abs=1e-6)
    assert quant_choices(SimpleNamespace(), opts[1:], 10.0, plan) == ()  # one candidate: nothing to choose

    spec = SimpleNamespace(model=str(model), max_samples=8, max_seq_len=64, calib=(), val=None, val_windows=2,
                           val_seq_len=64, report_windows=2, objective="loss", budget_ms=BUDGET_MS, trials=4,
                           rescore_top=3, workers=1, seed=0, quant=None, patience=3, recover_minutes=10.0,
                           recover_tokens=0)
    full = SimpleNamespace(quant=R("Q4_K_M"), latency_scale=1.3, prefill_scale=1.0, bounds=_bounds(), quants=choices)
    ctx = BuildContext(spec, None, None, device=Device.resolve(str(dev)), state=BuildState(plan=full))
    sspec = ctx.search_spec()
    assert sspec.quants == choices and sspec.quant == R("Q4_K_M") and ctx.quant == R("Q4_K_M")
    # every trial's cost is the plan's recovery estimate for the build's 10-minute allowance (0.343 of the gap)
    from adaprune_edge.recover import estimate

    assert sspec.patience == 3 and sspec.recover_closure == pytest.approx(estimate.closure(192480), abs=1e-6)
    assert 0.34 < sspec.recover_closure < 0.345
    ctx.state = ctx.state.with_result("search", SimpleNamespace(best=SimpleNamespace(quant=R("Q8_0"))))
    assert ctx.quant == R("Q8_0")  # export quantizes with the best trial's recipe


def test_the_report_names_the_shipped_trial_when_better_ones_miss_when_measured():
    from adaprune_edge.pipeline.prune_stages import shipped_cost
    from adaprune_edge.pipeline.report import search_cost_line
    from adaprune_edge.pipeline.results import Confirmation

    chosen = {"index": 2, "cost": 2.0208, "recipe": "obs/sum uniform @Q6_K"}
    cost = {"seconds": 142.5, "trials": 6, "stopped": "stalled", "raced_out": 3, "chosen": chosen,
            "best_warm_start": chosen, "chosen_minus_best_warm": 0.0}
    checked = [Confirmation(2, R("Q6_K"), 13.65, 402.4, True, False, "time to first token 2.558 s > 2.5"),
               Confirmation(1, R("Q6_K"), 13.45, 389.6, True, False, "time to first token 2.642 s > 2.5"),
               Confirmation(3, R("Q4_K_M"), 10.57, 433.7, True, True, "ok")]
    shipped = SimpleNamespace(index=3, cost=2.6634, summary=lambda: "obs/sum profile @Q4_K_M")
    out = shipped_cost(cost, shipped, checked)
    assert out["shipped"] == {"index": 3, "cost": 2.6634, "recipe": "obs/sum profile @Q4_K_M", "missed_when_measured": [2, 1]}
    assert search_cost_line(out).endswith("; shipped trial #3 (obs/sum profile @Q4_K_M, cost 2.6634): trials #2, #1 "
                                          "missed the budget when measured")
    assert shipped_cost(cost, SimpleNamespace(index=2), checked[:1]) is cost  # the choice ships: nothing added
