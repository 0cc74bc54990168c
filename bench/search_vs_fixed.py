"""Headline benchmark: the searched recipe vs every fixed recipe the tool offers, on the same latency budget.

Default model (SmolLM2-135M), device this-host (roofline), Q4_K_M. For each target share t of the decoder,
the decode budget is the predicted latency of the uniform structure at t (× 1.005). EVERY recipe — fixed
or searched — is put on that budget the same way: its smallest ratio meeting it is solved (search/ratio.py:
bisection on the predictor over the recipe's own allocation), then the model is pruned once at it. So all
rows sit at (predicted) equal latency; --measure adds measured llama.cpp ms/token (interleaved rounds).

Fixed recipes (all with least-squares reconstruction of o_proj/down_proj, `reconstruction=True`):
  magnitude-uniform (l1), LLM-Pruner-like (taylor, uniform, first 2 / last 1 kept), taylor-uniform, Wanda-sp
  (wanda, uniform), FLAP-like (fluctuation, global), ShortGPT-like (whole layers by block influence; no width
  pruning, so nothing to reconstruct); structured OBS (its own weight update, no reconstruction flag), sequential
  on the already-pruned model's activations, uniform and SlimGPT-like global.
Searched: SMAC (warm-started with the fixed recipes), every trial at its own solved ratio; then its
--rescore-top (3) best trials are re-scored on --rescore-windows (8) held-out windows after the report's and
the best combined score is chosen (search/rescore.py), as `build` does.

Calibration is the same for every recipe and trial of a seed: n_samples random windows of seq_len tokens (the search
chooses metric, aggregation, allocation incl. the depth profile, heads, protection, depth removal, bias /
reconstruction; not the calibration sample), so trials reuse the seed's cached statistics.

Three disjoint text sets, named in the JSON (`data_sets`): calibration = wikitext-2 valid records 0-80%
(32 × 256 tokens sampled per seed); objective = 4 × 512-token windows of the 80-100% tail; report = the next
8 × 512-token windows of that tail (never used by calibration or the objective) and 8 × 512 of PTB valid.
Seeds 0, 1, 2 (calibration sample and SMAC seed); mean ± spread (max − min) / 2 reported.

The headline run (the search gets the default build's 20 trials but at most 600 s of wall time to start
them, warm-started with the tool's fixed recipes, cheapest first):

    python3 bench/search_vs_fixed.py --targets 0.2,0.35 --seeds 0,1,2 --trials 20 --walltime 600 --measure --out bench/results/search_vs_fixed_fair32.json

ran before re-scoring existed; bench/results/search_vs_fixed_fair32r.json is a copy of it without the searched
rows, completed by the same command with `--no-new-trials --measure-missing --out ..._fair32r.json` (the six
searches re-scored and re-chosen from their stored trials; only the new rows measured).

A cut run resumes (fixed rows are kept when `scale` matches; a search resumes its run directory). `--scale`
shrinks the protocol for a busy host (stated in the JSON's `scale`), e.g. `--scale n_samples=16,val_windows=2`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from adaprune_edge.quant import QuantRecipe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WIKI, PTB = DATA / "wikitext-2" / "valid.txt", DATA / "ptb" / "ptb.valid.txt"
RESULTS = ROOT / "bench" / "results"
QUANT = QuantRecipe("Q4_K_M")
SCALE = dict(n_samples=32, seq_len=256, val_windows=4, val_seq_len=512, report_windows=8)

FIXED = {
    "magnitude-uniform+lsq": dict(metric="l1", allocation="uniform", reconstruction=True),
    "llm-pruner-like+lsq": dict(metric="taylor", allocation="uniform", protect_first=2, protect_last=1,
                                reconstruction=True),
    "taylor-uniform+lsq": dict(metric="taylor", allocation="uniform", reconstruction=True),
    "wanda-sp+lsq": dict(metric="wanda", allocation="uniform", reconstruction=True),
    "flap-like+lsq": dict(metric="fluctuation", allocation="global", reconstruction=True),
    "shortgpt-like": dict(metric="l2", allocation="uniform", depth_share=1.0),
}
# structured OBS (issue 17): its own weight update, so no reconstruction flag; SlimGPT-like = sequential
# layer-wise OBS on the already-pruned model's activations with a global (non-uniform) allocation
ONE_SHOT = {"obs-uniform-seq": dict(metric="obs", allocation="uniform", sequential=True),
            "slimgpt-like (obs-global-seq)": dict(metric="obs", allocation="global", sequential=True)}


def fixed_recipes():
    return {**FIXED, **ONE_SHOT}


def predict(structure, quant, profile):
    from adaprune_edge.latency.roofline import predict as roofline

    return roofline(structure, quant, profile)


def score(model, windows):
    from adaprune_edge.evaluate.perplexity import perplexity

    return {k: perplexity(model, w) for k, w in windows.items()}


def on_budget(ctx, cfg):
    """Prune with `cfg` at its own smallest ratio meeting the spec's budget (same solver as the search)."""
    from adaprune_edge.prune.engine import prune

    calib = ctx.pools[0]
    sol = ctx.solve(cfg, calib)
    res = prune(ctx.model, calib, dataclasses.replace(cfg, ratio=sol.ratio), cache=ctx.cache)
    return sol, res


def run_target(target, seed, args, lm, base, profile, report, rows, out_json, caches, dense):
    from adaprune_edge.latency.budget import uniform
    from adaprune_edge.prune.engine import PruneConfig
    from adaprune_edge.device import Device
    from adaprune_edge.search.evaluators import LocalEvaluator
    from adaprune_edge.search.objective import SearchContext
    from adaprune_edge.search.run import run_search
    from adaprune_edge.search.space import SpaceBounds, to_prune_config
    from adaprune_edge.search.spec import SearchSpec
    from adaprune_edge.search.trials import TrialStore

    budget_ms = predict(uniform(base, target, QUANT), QUANT, profile).decode_ms_per_token * 1.005
    bounds = SpaceBounds(r_min=target, r_max=min(0.9, round(target + 0.25, 4)), min_samples=SCALE["n_samples"],
                         max_samples=SCALE["n_samples"], min_seq_len=SCALE["seq_len"], max_seq_len=SCALE["seq_len"],
                         sampling="random")
    spec = SearchSpec(model="default", device=Device.of(profile), quant=QUANT, bounds=bounds, calib=(str(WIKI),),
                      val_windows=SCALE["val_windows"], val_seq_len=SCALE["val_seq_len"],
                      report_windows=SCALE["report_windows"], budget_ms=budget_ms, facade=args.facade,
                      n_trials=args.trials, walltime_s=args.walltime, seed=seed, rescore_top=args.rescore_top,
                      rescore_windows=args.rescore_windows)
    ctx = SearchContext(spec, lm)
    ctx.cache = caches.setdefault(seed, ctx.cache)  # statistics depend on the seed's windows, not the target
    test = {"wikitext": ctx.report_windows, **report}
    common = dict(target=target, seed=seed, budget_ms=budget_ms)
    if "ppl_wikitext" not in dense:
        dense.update({f"ppl_{k}": v for k, v in score(lm.model, test).items()}, _structure=base.to_dict(),
                     predicted_ms=predict(base, QUANT, profile).decode_ms_per_token)
        # the three disjoint sets; the same for every seed (a seed samples its calibration windows from the pool)
        _save(out_json, rows, dense=dense, data_sets={k: s.to_dict() for k, s in ctx.data_sets().items()})
    print(f"target {target} seed {seed}: budget {budget_ms:.3f} ms/token (predicted, uniform {target:.0%})", flush=True)
    done = {r["recipe"] for r in rows if (r["target"], r["seed"]) == (target, seed)}
    for name, kw in fixed_recipes().items():
        if name in done:
            continue
        t0 = time.perf_counter()
        cfg = PruneConfig(n_samples=SCALE["n_samples"], seq_len=SCALE["seq_len"], align=256, seed=seed, **kw)
        sol, res = on_budget(ctx, cfg)
        rows.append(_row(common, name, sol, res, score(res.model, test), profile, time.perf_counter() - t0))
        _save(out_json, rows)
    if "searched" in done:
        return
    t0 = time.perf_counter()
    run_dir = RESULTS / "runs" / f"search_{target}_s{seed}_{_scale_key(args)}"
    resume = (run_dir / "trials.jsonl").exists()
    if resume and args.no_new_trials:  # re-score a finished search's top trials; run no new trial
        spec = dataclasses.replace(spec, n_trials=len(TrialStore(run_dir).records()))
    outcome = run_search(spec, run_dir, resume=resume, evaluator=LocalEvaluator(spec, ctx))
    _save(out_json, rows, data_sets={k: s.to_dict() for k, s in ctx.data_sets(rescoring=args.rescore_top > 0).items()})
    best = outcome.best
    cfg, _ = to_prune_config(best.values, 256, seed)
    sol, res = on_budget(ctx, cfg)
    rows.append(_row(common, "searched", sol, res, score(res.model, test), profile, time.perf_counter() - t0,
                     search_recipe=best.summary(), trials_asked=args.trials, walltime_s=args.walltime, facade=args.facade, search_objective_loss=best.cost, trials=len(outcome.records),
                     feasible_trials=sum(r.feasible for r in outcome.records),
                     trial_ratios=[r.solved_ratio for r in outcome.records],
                     rescored=[r.to_dict() for r in outcome.rescored], lowest_trial_cost=min(r.cost for r in outcome.records),
                     search_seconds=sum(r.seconds for r in outcome.records) + sum(r.seconds for r in outcome.rescored)))
    _save(out_json, rows)


def _scale_key(args):
    """Names a search's run directory by everything it depends on, so a rerun resumes only its own trials."""
    import hashlib

    key = {**SCALE, "trials": args.trials, "facade": args.facade, "walltime": args.walltime, "warm": "cheap-first"}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def _row(common, name, sol, res, ppl, profile, seconds, **extra):
    pred = predict(res.structure, QUANT, profile).decode_ms_per_token
    return {**common, "recipe": name, "solved_ratio": sol.ratio,
            "decoder_ratio": res.decoder_ratio, "params": res.params_after,
            **{f"ppl_{k}": v for k, v in ppl.items()}, "predicted_ms": pred, "meets_budget": pred <= common["budget_ms"],
            "seconds": seconds, "structure": res.structure.condensed(), "_structure": res.structure.to_dict(), **extra}


def _save(path, rows, **more):
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**old, **more, "rows": rows}, indent=1))


def summary(rows):
    """Per target and recipe: mean ± spread of report-set PPL over seeds; gain of searched vs best fixed."""
    out = {}
    for t in sorted({r["target"] for r in rows}):
        per = {}
        for r in rows:
            if r["target"] == t:
                per.setdefault(r["recipe"], []).append(r)
        keys = ("ppl_wikitext", "ppl_ptb", "predicted_ms", "measured_ms", "decoder_ratio")
        stats = {name: {k: _ms([r[k] for r in rs if k in r]) for k in keys if any(k in r for r in rs)}
                 | {"seeds": [r["seed"] for r in rs]} for name, rs in per.items()}
        fixed = {n: s for n, s in stats.items() if n != "searched"}
        best = min(fixed, key=lambda n: fixed[n]["ppl_wikitext"]["mean"])
        entry = {"recipes": stats, "best_fixed": best}
        if "searched" in stats:
            s, b = stats["searched"]["ppl_wikitext"]["mean"], fixed[best]["ppl_wikitext"]["mean"]
            entry["searched_vs_best_fixed_ppl_gain"] = 1 - s / b
            seeds = sorted(set(stats["searched"]["seeds"]) & set(fixed[best]["seeds"]))
            entry["per_seed_gain"] = {sd: 1 - _at(per["searched"], sd) / min(_at(per[n], sd) for n in fixed if _has(per[n], sd))
                                      for sd in seeds}
        out[str(t)] = entry
    return out


def _at(rs, seed):
    return next(r["ppl_wikitext"] for r in rs if r["seed"] == seed)


def _has(rs, seed):
    return any(r["seed"] == seed for r in rs)


def _ms(xs):
    return {"mean": statistics.fmean(xs), "spread": (max(xs) - min(xs)) / 2, "n": len(xs)}


def measure(rows, profile, rounds):
    """Measured decode ms/token of every distinct structure (shape-only GGUF, interleaved rounds, median)."""
    from adaprune_edge.device import Device
    from adaprune_edge.archs.structure import Structure

    device = Device.of(profile)
    sts = {json.dumps(r["_structure"], sort_keys=True): Structure.from_dict(r["_structure"]) for r in rows}
    samples = {k: [] for k in sts}
    for _ in range(rounds):
        for k, st in sts.items():
            samples[k].append(device.latency_of(st, QUANT, use_cache=False).decode_ms_per_token)
    for r in rows:
        r["measured_ms"] = statistics.median(samples[json.dumps(r["_structure"], sort_keys=True)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="0.2,0.35")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--facade", default="hpo")
    ap.add_argument("--walltime", type=float, default=None,
                    help="wall seconds the search may start trials in (the trial running then finishes)")
    ap.add_argument("--rescore-top", type=int, default=3, help="top trials re-scored before the searched recipe is chosen")
    ap.add_argument("--rescore-windows", type=int, default=8, help="held-out windows after the report's that re-score them")
    ap.add_argument("--no-new-trials", action="store_true",
                    help="reuse finished searches as they are (their trials only): re-score and choose again")
    ap.add_argument("--measure-missing", action="store_true", help="measure only rows without measured ms")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--measure-rounds", type=int, default=3, help="interleaved rounds per structure (median)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--scale", default="", help="overrides, e.g. n_samples=8,seq_len=128,val_windows=2,val_seq_len=256,report_windows=4")
    ap.add_argument("--no-ptb", action="store_true", help="report on the wikitext-2 windows only")
    args = ap.parse_args()
    for kv in filter(None, args.scale.split(",")):
        k, v = kv.split("=")
        SCALE[k] = int(v)
    out = Path(args.out) if args.out else RESULTS / f"search_vs_fixed_{args.targets.replace(',', '_')}.json"
    import torch

    from adaprune_edge import models, profiles
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.archs.structure import Structure

    torch.manual_seed(0)
    lm = models.load("default")
    base = Structure.from_model(lm.model)
    profile = profiles.load_profile("this-host")
    report = {} if args.no_ptb else {"ptb": CalibrationPool.from_sources([str(PTB)], lm.tokenizer, SCALE["val_seq_len"]).windows[:8]}
    scale = {**SCALE, "ptb": not args.no_ptb,
             "note": "scaled down for a shared 2-core host: n_samples x seq_len random calibration windows (fixed, "
                     "not searched), val_windows x val_seq_len objective windows, report_windows x val_seq_len "
                     "wikitext-2 report windows after the objective's (and 8 PTB valid windows when ptb is true)"}
    old = json.loads(out.read_text()) if out.exists() else {}
    # resume a run of the same scale (fixed rows do not depend on the trials, seeds or targets asked now)
    rows = [r for r in old.get("rows", []) if r["recipe"] in {*fixed_recipes(), "searched"}] \
        if old.get("scale") == scale else []
    dense = old.get("dense", {}) if rows else {}
    rescoring = {"top": args.rescore_top, "windows": args.rescore_windows, "reused_searches": args.no_new_trials}
    _save(out, rows, scale=scale, fixed_recipes=fixed_recipes(), dense=dense, rescoring=rescoring)
    caches = {}
    for seed in [int(s) for s in args.seeds.split(",")]:  # every target per seed first: a cut run has pairs
        for t in [float(x) for x in args.targets.split(",")]:
            run_target(t, seed, args, lm, base, profile, report, rows, out, caches, dense)
            _save(out, rows, summary=summary(rows))
    if args.measure or args.measure_missing:
        todo = [r for r in rows + [dense] if args.measure or "measured_ms" not in r]
        measure(todo, profile, args.measure_rounds)
    _save(out, rows, summary=summary(rows), dense=dense)
    for t, e in summary(rows).items():
        print(t, json.dumps({k: v for k, v in e.items() if k != "recipes"}))
    print(markdown(summary(rows), dense))


def markdown(summ, dense):
    """The README table: per target, every recipe's report-set PPL (mean ± spread over seeds) and latency."""
    lines = ["| target | recipe | wikitext-2 PPL | PTB PPL | decoder removed | predicted ms | measured ms |",
             "|---|---|---|---|---|---|---|"]
    cell = lambda s, k, f: f"{s[k]['mean']:{f}} ± {s[k]['spread']:{f}}" if k in s else "–"  # noqa: E731
    for t, e in summ.items():
        ranked = sorted(e["recipes"].items(), key=lambda kv: kv[1]["ppl_wikitext"]["mean"])
        for name, s in ranked:
            lines.append(f"| {float(t):.0%} | {name} | {cell(s, 'ppl_wikitext', '.2f')} | {cell(s, 'ppl_ptb', '.1f')} | "
                         f"{s['decoder_ratio']['mean']:.1%} | {s['predicted_ms']['mean']:.2f} | {cell(s, 'measured_ms', '.2f')} |")
    if dense:
        lines.append(f"| – | dense | {dense['ppl_wikitext']:.2f} | {dense.get('ppl_ptb', float('nan')):.1f} | 0% | "
                     f"{dense['predicted_ms']:.2f} | {dense.get('measured_ms', float('nan')):.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
