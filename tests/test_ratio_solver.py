"""Every trial on the budget: the ratio solver (bisection on the calibrated predictor over a recipe's own
allocation) and the search that uses it. Every finished trial meets the budget and its solved ratio is
minimal (the same recipe at ratio − TOL misses); hyperband resumes after kill -9 without losing trials."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from adaprune_edge import profiles
from adaprune_edge.device import Device
from adaprune_edge.latency.budget import uniform
from adaprune_edge.latency.roofline import predict
from adaprune_edge.prune.engine import PruneConfig
from adaprune_edge.prune.probe import StructureProbe
from adaprune_edge.search.evaluators import LocalEvaluator
from adaprune_edge.search.ratio import TOL, predicted_fit, solve_ratio
from adaprune_edge.search.run import run_search
from adaprune_edge.search.space import SpaceBounds
from adaprune_edge.search.spec import SearchSpec
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

N_TRIALS = 6


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny"), ffn=512)


def _spec(tiny_dir, text, **kw):
    from adaprune_edge.models import load

    profile = profiles.load_profile("this-host")
    base = Structure.from_model(load(str(tiny_dir)).model)
    dense_ms = predict(base, R("Q8_0"), profile).decode_ms_per_token
    floor_ms = predict(uniform(base, 0.6, R("Q8_0")), R("Q8_0"), profile).decode_ms_per_token
    budget = floor_ms + 0.6 * (dense_ms - floor_ms)
    bounds = SpaceBounds(r_min=0.1, r_max=0.7, min_samples=2, max_samples=8, min_seq_len=16, max_seq_len=64,
                         max_protect_first=1, max_protect_last=1)
    return SearchSpec(model=str(tiny_dir), device=Device.of(profile), quant=R("Q8_0"), bounds=bounds, calib=(str(text),),
                      val_windows=2, val_seq_len=64, budget_ms=budget, n_trials=N_TRIALS, seed=5, **kw)


def test_solver_finds_the_smallest_fitting_ratio():
    calls = []

    def structure_at(r):
        calls.append(r)
        return round(r * 40) / 40  # a step function, as structures are

    sol = solve_ratio(structure_at, lambda st: (st >= 0.3, f"{st}"), hi=0.8, tol=0.001)
    assert sol.ok and 0.275 < sol.ratio <= 0.2875 + 0.001 and structure_at(sol.ratio - 0.001) < 0.3
    assert sol.steps == len(calls) - 1 and sol.steps <= 12
    assert solve_ratio(structure_at, lambda st: (True, ""), hi=0.8).ratio == 0.0
    miss = solve_ratio(structure_at, lambda st: (False, "too slow"), hi=0.8)
    assert not miss.ok and miss.ratio == 0.8 and miss.reason == "too slow"


def test_every_trial_meets_the_budget_at_its_minimal_ratio(tiny_dir, shared_data, tmp_path):
    # no warm starts: those fixed recipes differ in metric and allocation only, which on this tiny model
    # all need the same ratio; SMAC's own points vary protection and depth, which change it
    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", warm_start=False, patience=0)  # every trial
    ev = LocalEvaluator(spec)
    out = run_search(spec, tmp_path / "run", evaluator=ev)
    ctx = ev.context
    fits = predicted_fit(ctx.predictor(spec.quant), spec.profile, spec.budget_ms)
    assert len(out.records) == N_TRIALS
    ok = [r for r in out.records if r.feasible]
    assert len(ok) >= N_TRIALS - 1, [(r.budget_reason, r.values) for r in out.records]
    for r in out.records:
        cfg = PruneConfig.from_dict(r.prune_config)
        assert r.solved_ratio == cfg.ratio and r.ratio_steps >= 1
        probe = StructureProbe(ctx.model, ctx.calibration(cfg, [1.0]), cfg, ctx.cache)
        if not r.feasible:  # only a recipe that cannot reach the budget even at r_max may miss it
            assert r.solved_ratio == spec.bounds.r_max and not fits(probe.at(r.solved_ratio))[0]
            continue
        assert r.decode_ms <= spec.budget_ms + 1e-9 and 0 < r.loss < 15
        assert probe.at(r.solved_ratio) == r.structure  # the solver's structure is the pruned one
        assert r.solved_ratio > 0 and not fits(probe.at(r.solved_ratio - TOL))[0], r.summary()
    assert len({r.solved_ratio for r in ok}) >= 2  # recipes differ in what they need, so ratios do too


def _trials(out):
    f = out / "trials.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def test_hyperband_resumes_after_kill_without_losing_trials(tmp_path):
    from conftest import tiny_model_with_budget

    model, dev, budget = tiny_model_with_budget(tmp_path)
    out = tmp_path / "hb"
    argv = [sys.executable, "-m", "adaprune_edge.cli.app", "search", "--device", str(dev), "--model", str(model),
            "--quant", "Q8_0", "--budget-ms", f"{budget:.5f}", "--max-samples", "8", "--max-seq-len", "64",
            "--val-windows", "4", "--val-seq-len", "64", "--facade", "hyperband", "--trials", "8",
            "--calib", "builtin:pydoc", "--seed", "2", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t0 = time.monotonic()
    try:
        while len(_trials(out)) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() - t0 < 600
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    before = _trials(out)
    assert 3 <= len(before) < 8
    r = subprocess.run(argv + ["--resume"], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    after = _trials(out)
    assert len(after) == 8 and [t["index"] for t in after] == list(range(8))
    assert after[: len(before)] == before, "a finished trial was redone or changed"
    assert {t["fidelity"] for t in after} >= {1, 4}, "hyperband ran no low-fidelity trial"
    keys = [(json.dumps(t["values"], sort_keys=True), t["fidelity"]) for t in after]
    assert len(set(keys)) == len(keys), "a configuration was evaluated twice at one fidelity"
    assert all(t["decode_ms"] <= budget + 1e-9 for t in after if t["status"] == "ok")


def test_cheap_trials_reuse_cached_statistics(tiny_dir, shared_data):
    """Trials that change only metric/allocation (or the fidelity) run no new forward/backward pass."""
    from adaprune_edge.search.objective import SearchContext
    from adaprune_edge.search.space import build_space, plain

    spec = _spec(tiny_dir, shared_data / "wikitext-2/valid.txt", facade="hyperband")
    ctx = SearchContext(spec)
    base = plain(build_space(spec.bounds, 0).get_default_configuration())
    first = ctx.evaluate(0, {**base, "metric": "wanda", "allocation": "uniform"}, fidelity=1)
    misses = ctx.cache.misses
    assert misses == 1 and not first.cache_hit
    knots = {f"knot_{k}": v for k, v in enumerate((1.0, 0.3, 0.3, 1.0))}
    for i, values in enumerate([{**base, "metric": "fluctuation", "allocation": "global"},
                                {**base, "metric": "wanda", "allocation": "profile", "head_weight": 0.5, **knots}]):
        rec = ctx.evaluate(i + 1, values, fidelity=1)
        assert rec.cache_hit and rec.feasible and rec.fidelity == 1
    promoted = ctx.evaluate(3, {**base, "metric": "wanda", "allocation": "uniform"}, fidelity=2)
    assert promoted.cache_hit and promoted.fidelity == 2 and promoted.solved_ratio == first.solved_ratio
    assert ctx.cache.misses == misses
