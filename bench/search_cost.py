"""What the search costs and what it buys: the searched recipe vs the best fixed recipe in hindsight, with
wall time counted the same way for both.

Same protocol as bench/search_vs_fixed.py (default model, device this-host, Q4_K_M; per target share t of the
decoder the budget is the predicted latency of the uniform structure at t × 1.005; every recipe at its own
smallest ratio meeting it; calibration 32 × 256 random wikitext-2 tokens per seed; objective 4 × 512 of the
held-out tail; report 8 × 512 after it plus 8 × 512 PTB valid, never seen by calibration, objective or the
re-scoring windows). What changes is the cost accounting:

- every fixed recipe runs **alone, from an empty statistics cache** (as `adaprune-edge prune` runs it),
  timed from its first calibration pass to its report-window perplexities;
- every search runs from an empty cache too, and is timed from its first trial through re-scoring, the
  prune of its pick and the same report-window perplexities.

`cost_ratio` = search seconds / mean fixed-recipe seconds of the same (target, seed). "Best in hindsight" =
the fixed recipe with the lowest mean report-window wikitext-2 PPL over the seeds at that target; the search
is within 1% when its mean is at most 1.01 × that. `--recovery-closure C` scores every trial (and every fixed
row) with the plan's recovery estimate (share C of the log-PPL gap to dense closed: recover/estimate.py), the
build's lever when pruning ships.

    python3 bench/search_cost.py --targets 0.2,0.35 --seeds 0,1,2 --out bench/results/search_cost.json

A cut run resumes: finished rows are kept, a search resumes its run directory (its trials are not timed
again: its row keeps the trials' own seconds). `--rechoose` re-derives the searched rows from the finished
searches' own trials with today's choice rule (search/race.py: chosen), timing only the pick's prune and
scoring; the stored file was made that way after its searches ran with the lowest-cost choice:

    python3 bench/search_cost.py --targets 0.2,0.35 --seeds 0,1,2 --rechoose
    python3 bench/search_cost.py --targets 0.35 --seeds 0,1,2 --recovery-closure 0.3429 \
        --fixed-from bench/results/search_cost.json --out bench/results/search_cost_recovery.json"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_vs_fixed as svf  # noqa: E402  (same protocol, recipes and scoring)

RESULTS = svf.RESULTS


def _spec(target, seed, args, base, profile):
    from adaprune_edge.device import Device
    from adaprune_edge.latency.budget import uniform
    from adaprune_edge.search.space import SpaceBounds
    from adaprune_edge.search.spec import SearchSpec

    q, sc = svf.QUANT, svf.SCALE
    budget_ms = svf.predict(uniform(base, target, q), q, profile).decode_ms_per_token * 1.005
    bounds = SpaceBounds(r_min=target, r_max=min(0.9, round(target + 0.25, 4)), min_samples=sc["n_samples"],
                         max_samples=sc["n_samples"], min_seq_len=sc["seq_len"], max_seq_len=sc["seq_len"],
                         sampling="random")
    return SearchSpec(model="default", device=Device.of(profile), quant=q, bounds=bounds, calib=(str(svf.WIKI),),
                      val_windows=sc["val_windows"], val_seq_len=sc["val_seq_len"], report_windows=sc["report_windows"],
                      budget_ms=budget_ms, n_trials=args.trials, seed=seed, patience=args.patience,
                      rescore_top=args.rescore_top, rescore_windows=args.rescore_windows,
                      recover_closure=args.recovery_closure)


def _recovered(ppl, dense_ppl, closure):
    """The plan's recovery estimate of a pruned PPL (recover/estimate.py)."""
    return math.exp(math.log(dense_ppl) + (1 - closure) * (math.log(ppl) - math.log(dense_ppl)))


def _fresh(ctx):
    """The context with an empty statistics cache (a recipe or a search run alone)."""
    from adaprune_edge.prune.importance import ImportanceCache

    ctx.cache = ImportanceCache()
    return ctx


def run_pair(target, seed, args, lm, base, profile, report, rows, out, dense):
    from adaprune_edge.prune.engine import PruneConfig
    from adaprune_edge.search.evaluators import LocalEvaluator
    from adaprune_edge.search.objective import SearchContext
    from adaprune_edge.search.run import run_search
    from adaprune_edge.search.trials import TrialStore

    spec = _spec(target, seed, args, base, profile)
    ctx = SearchContext(spec, lm)
    test = {"wikitext": ctx.report_windows, **report}
    if "ppl_wikitext" not in dense:
        dense.update({f"ppl_{k}": v for k, v in svf.score(lm.model, test).items()})
        svf._save(out, rows, dense=dense, data_sets={k: s.to_dict() for k, s in ctx.data_sets().items()})
    common = dict(target=target, seed=seed, budget_ms=spec.budget_ms)
    if args.rechoose:  # choose again from the finished search's own trials (below)
        rows[:] = [r for r in rows if not (r["recipe"] == "searched" and (r["target"], r["seed"]) == (target, seed))]
    done = {r["recipe"] for r in rows if (r["target"], r["seed"]) == (target, seed)}
    print(f"target {target} seed {seed}: budget {spec.budget_ms:.3f} ms/token", flush=True)
    for name, kw in svf.fixed_recipes().items():
        if name in done:
            continue
        _fresh(ctx)
        t0 = time.perf_counter()
        cfg = PruneConfig(n_samples=svf.SCALE["n_samples"], seq_len=svf.SCALE["seq_len"], align=256, seed=seed, **kw)
        sol, res = svf.on_budget(ctx, cfg)
        rows.append(svf._row(common, name, sol, res, svf.score(res.model, test), profile, time.perf_counter() - t0))
        print(f"  {name}: {rows[-1]['ppl_wikitext']:.2f} in {rows[-1]['seconds']:.0f} s", flush=True)
        svf._save(out, rows)
    if "searched" in done:
        return
    run_dir = RESULTS / "runs" / f"cost_{target}_s{seed}_{_key(args)}"
    resume = (run_dir / "trials.jsonl").exists()
    if args.rechoose:
        if not resume:
            raise SystemExit(f"--rechoose: no finished search in {run_dir}")
        spec = dataclasses.replace(spec, n_trials=len(TrialStore(run_dir).records()))
    _fresh(ctx)
    t0 = time.perf_counter()
    outcome = run_search(spec, run_dir, resume=resume, force=not resume, evaluator=LocalEvaluator(spec, ctx))
    t1 = time.perf_counter()
    best = outcome.best
    _, res = ctx.reprune(best)  # the trial's own model when it is the one the search kept (objective.py)
    sol = types.SimpleNamespace(ratio=best.solved_ratio)
    ppl = svf.score(res.model, test)
    t2 = time.perf_counter()
    searched = outcome.seconds if resume else t1 - t0  # a resumed search: its trials' own seconds + re-scoring
    warm = outcome.best_warm()
    rows.append(svf._row(common, "searched", sol, res, ppl, profile, searched + t2 - t1,
                         search_recipe=best.summary(), search_seconds=searched, pick_seconds=t2 - t1,
                         trials=len(outcome.records), stopped=outcome.stopped,
                         raced_out=sum(1 for r in outcome.records if r.feasible and r.fidelity < spec.val_windows),
                         warm_trials=sum(r.origin == "warm" for r in outcome.records),
                         incumbent_cost=best.cost, best_warm=warm.summary() if warm else None,
                         best_warm_cost=warm.cost if warm else None,
                         trial_seconds=[round(r.seconds, 2) for r in outcome.records],
                         rescored=[r.to_dict() for r in outcome.rescored]))
    print(f"  searched: {ppl['wikitext']:.2f} in {rows[-1]['seconds']:.0f} s ({len(outcome.records)} trials, "
          f"stopped: {outcome.stopped}; {best.summary()})", flush=True)
    svf._save(out, rows)


def _key(args):
    import hashlib

    key = {**svf.SCALE, "trials": args.trials, "patience": args.patience, "closure": args.recovery_closure,
           "rescore": [args.rescore_top, args.rescore_windows], "race": "v2"}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def summary(rows, dense, closure):
    """Per target: every recipe's mean report PPL (after the recovery estimate when closure > 0), the best
    fixed in hindsight, the search's per-seed picks and its cost ratio."""
    out = {}
    adj = (lambda p: _recovered(p, dense["ppl_wikitext"], closure)) if closure else (lambda p: p)
    for t in sorted({r["target"] for r in rows}):
        rs = [r for r in rows if r["target"] == t]
        seeds = sorted({r["seed"] for r in rs if r["recipe"] == "searched"})
        if not seeds:
            continue
        per = {}
        for r in rs:
            if r["seed"] in seeds:
                per.setdefault(r["recipe"], []).append(r)
        mean = {n: statistics.fmean(adj(r["ppl_wikitext"]) for r in v) for n, v in per.items() if len(v) == len(seeds)}
        fixed = {n: m for n, m in mean.items() if n != "searched"}
        best = min(fixed, key=fixed.get)
        s_rows = sorted(per["searched"], key=lambda r: r["seed"])
        ratios = []
        for r in s_rows:
            f = [x["seconds"] for x in rs if x["seed"] == r["seed"] and x["recipe"] != "searched"]
            ratios.append(r["seconds"] / statistics.fmean(f))
        out[str(t)] = {
            "seeds": seeds, "best_fixed": best, "best_fixed_ppl": fixed[best], "searched_ppl": mean["searched"],
            "searched_vs_best_fixed": mean["searched"] / fixed[best] - 1,
            "within_1pct": mean["searched"] <= 1.01 * fixed[best],
            "fixed_mean_ppl": {n: fixed[n] for n in sorted(fixed, key=fixed.get)},
            "picks": {str(r["seed"]): r["search_recipe"] for r in s_rows},
            "trials": {str(r["seed"]): r["trials"] for r in s_rows},
            "stopped": {str(r["seed"]): r["stopped"] for r in s_rows},
            "search_seconds": {str(r["seed"]): r["seconds"] for r in s_rows},
            "fixed_mean_seconds": {str(r["seed"]): statistics.fmean(x["seconds"] for x in rs if x["seed"] == r["seed"]
                                                                  and x["recipe"] != "searched") for r in s_rows},
            "cost_ratio": {str(r["seed"]): q for r, q in zip(s_rows, ratios)},
            "mean_cost_ratio": statistics.fmean(ratios),
            "incumbent_vs_best_warm": {str(r["seed"]): (r["incumbent_cost"] - r["best_warm_cost"])
                                       if r.get("best_warm_cost") is not None else None for r in s_rows},
        }
    return out


def markdown(summ):
    lines = ["| target | best fixed in hindsight (mean PPL) | searched (mean PPL) | vs best | picks (seed: recipe) | "
             "trials | search s / mean fixed s | ratio |", "|---|---|---|---|---|---|---|---|"]
    for t, e in summ.items():
        picks = "; ".join(f"{s}: {p}" for s, p in e["picks"].items())
        secs = ", ".join(f"{e['search_seconds'][str(s)]:.0f}/{e['fixed_mean_seconds'][str(s)]:.0f}" for s in e["seeds"])
        trials = ", ".join(str(e["trials"][str(s)]) for s in e["seeds"])
        lines.append(f"| {float(t):.0%} | {e['best_fixed']} ({e['best_fixed_ppl']:.2f}) | {e['searched_ppl']:.2f} | "
                     f"{e['searched_vs_best_fixed']:+.1%} | {picks} | {trials} | {secs} | {e['mean_cost_ratio']:.1f}× |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="0.2,0.35")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=20, help="the search's trial cap (the build's default)")
    ap.add_argument("--patience", type=int, default=3, help="trials without a real improvement before the search stops")
    ap.add_argument("--rescore-top", type=int, default=3)
    ap.add_argument("--rescore-windows", type=int, default=8)
    ap.add_argument("--recovery-closure", type=float, default=0.0,
                    help="share of the log-PPL gap the recovery estimate closes (0: no recovery in the cost)")
    ap.add_argument("--fixed-from", default=None,
                    help="reuse the fixed-recipe rows (report PPL, seconds) of another run of this bench with the same "
                         "scale; only the searches run (for --recovery-closure: the fixed rows do not depend on it)")
    ap.add_argument("--rechoose", action="store_true",
                    help="choose again from the finished searches' own trials with today's choice rule (no new trial): "
                         "the searched rows' search seconds are their trials' and re-scoring's own, the pick's prune "
                         "(the kept model is gone in a new process) and report scoring are timed now")
    ap.add_argument("--out", default=str(RESULTS / "search_cost.json"))
    ap.add_argument("--no-ptb", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    import torch

    from adaprune_edge import models, profiles
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.data.calibration import CalibrationPool

    torch.manual_seed(0)
    lm = models.load("default")
    base = Structure.from_model(lm.model)
    profile = profiles.load_profile("this-host")
    report = {} if args.no_ptb else {"ptb": CalibrationPool.from_sources([str(svf.PTB)], lm.tokenizer,
                                                                         svf.SCALE["val_seq_len"]).windows[:8]}
    settings = {**svf.SCALE, "ptb": not args.no_ptb, "trials": args.trials, "patience": args.patience,
                "rescore_top": args.rescore_top, "rescore_windows": args.rescore_windows,
                "recovery_closure": args.recovery_closure, "timing": "every fixed recipe and every search from an empty cache"}
    old = json.loads(out.read_text()) if out.exists() else {}
    same = lambda d: {k: v for k, v in d.items() if k not in ("fixed_from", "rechosen")}  # noqa: E731
    rows = old.get("rows", []) if same(old.get("settings", {})) == same(settings) else []
    dense = old.get("dense", {}) if rows else {}
    if args.fixed_from and not rows:
        src = json.loads(Path(args.fixed_from).read_text())
        same = {k: v for k, v in src["settings"].items() if k not in ("recovery_closure", "patience", "trials", "rechosen", "fixed_from")}
        if same != {k: v for k, v in settings.items() if k in same}:
            raise SystemExit(f"--fixed-from {args.fixed_from}: another scale ({src['settings']})")
        rows, dense = [r for r in src["rows"] if r["recipe"] != "searched"], src["dense"]
        settings["fixed_from"] = args.fixed_from
    if args.rechoose:
        settings["rechosen"] = "searched rows re-chosen from the stored trials with race.chosen (--rechoose)"
    svf._save(out, rows, settings=settings, fixed_recipes=svf.fixed_recipes(), dense=dense)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for t in [float(x) for x in args.targets.split(",")]:
            run_pair(t, seed, args, lm, base, profile, report, rows, out, dense)
            svf._save(out, rows, summary=summary(rows, dense, args.recovery_closure))
    summ = summary(rows, dense, args.recovery_closure)
    svf._save(out, rows, summary=summ, dense=dense)
    print(json.dumps({t: {k: v for k, v in e.items() if k != "fixed_mean_ppl"} for t, e in summ.items()}, indent=1))
    print(markdown(summ))


if __name__ == "__main__":
    main()
