"""Headline benchmark: the searched recipe vs published fixed recipes at the same latency budget.

Default model, device this-host (latency MEASURED here with llama.cpp on shape-only GGUFs of each final
structure). For each target (share of the decoder a uniform prune needs to meet the budget), the budget
is the measured decode ms/token of that uniform structure. Every recipe starts at the smallest ratio
whose structure meets the budget (predicted), stepping up until it does:

  magnitude-uniform (l1), LLM-Pruner-like (taylor, uniform, first 2 / last 1 layers kept), Wanda-sp
  (wanda, uniform), FLAP-like (fluctuation, global, bias compensation), ShortGPT-like (whole layers by
  block influence), and the SMAC search (warm-started with three of those recipes).

Calibration: first 80% of wikitext-2 valid; the search's objective: 4 windows right after it. Reported
quality is on data the search never saw: wikitext-2 windows 4..11 of the held-out tail and PTB valid.

    python3 bench/search_vs_fixed.py [--targets 0.2,0.35] [--trials 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WIKI, PTB = DATA / "wikitext-2" / "valid.txt", DATA / "ptb" / "ptb.valid.txt"
OUT = ROOT / "bench" / "results" / "search_vs_fixed.json"

FIXED = {
    "magnitude-uniform": dict(metric="l1", allocation="uniform"),
    "llm-pruner-like": dict(metric="taylor", allocation="uniform", protect_first=2, protect_last=1),
    "wanda-sp": dict(metric="wanda", allocation="uniform"),
    "flap-like": dict(metric="fluctuation", allocation="global", bias_compensation=True),
    "shortgpt-like": dict(metric="l2", allocation="uniform", depth_share=1.0),
}


def fixed_at_budget(ctx, name, kw, r_min, budget_ms, scale):
    """Prune with a fixed recipe at the smallest ratio ≥ r_min whose structure meets the budget (predicted)."""
    from adaprune_edge.pruner import PruneConfig, prune
    from adaprune_edge.roofline import predict

    r = r_min
    for _ in range(30):
        cfg = PruneConfig(ratio=round(r, 4), n_samples=32, seq_len=256, align=256, seed=0, **kw)
        res = prune(ctx.model, ctx.pools[0], cfg, cache=ctx.cache)
        if measure(res.structure, ctx.profile) <= budget_ms:
            return res
        r += 0.01
    raise RuntimeError(f"{name}: no ratio up to {r:.2f} meets the budget")


def score(model, windows):
    from adaprune_edge.perplexity import perplexity

    return {k: perplexity(model, w) for k, w in windows.items()}


def measure(structure, profile):
    from adaprune_edge.latency import BenchSettings
    from adaprune_edge.shape_latency import structure_latency

    return structure_latency(structure, "Q4_K_M", BenchSettings.from_profile(profile), profile.name).decode_ms_per_token


def run_target(target, trials, lm, base, profile, test, rows, out_json):
    from adaprune_edge.budget import uniform
    from adaprune_edge.plan import make_plan
    from adaprune_edge.search import LocalEvaluator, SearchContext, SearchSpec, run_search
    from adaprune_edge.searchspace import SpaceBounds
    from adaprune_edge.structure import Structure

    budget_ms = measure(uniform(base, target, "Q4_K_M"), profile) * 1.02
    plan = make_plan(base, profile, "Q4_K_M", budget_ms, 0.6, confirm=True, max_samples=64, max_seq_len=256)
    spec = SearchSpec(model="default", profile=profile.to_dict(), quant="Q4_K_M", bounds=plan.bounds.to_dict(),
                      calib=(str(WIKI),), val_windows=4, val_seq_len=512, budget_ms=budget_ms, latency_scale=plan.latency_scale, measure_trials=True, n_trials=trials, seed=0)
    ctx = SearchContext(spec, lm)
    print(f"target {target}: budget {budget_ms:.2f} ms/token (measured), r_min {plan.r_min:.3f}", flush=True)
    for name, kw in FIXED.items():
        t0 = time.perf_counter()
        res = fixed_at_budget(ctx, name, kw, plan.r_min, budget_ms, plan.latency_scale)
        rows.append(_row(target, name, budget_ms, res.structure, res.decoder_ratio, res.params_after,
                         score(res.model, test), measure(res.structure, profile), time.perf_counter() - t0))
        _save(out_json, rows)
    t0 = time.perf_counter()
    outcome = run_search(spec, ROOT / "bench" / "results" / f"search_{target}", force=True,
                         evaluator=LocalEvaluator(spec, ctx))
    best = _measured_best(outcome.records, profile, budget_ms)
    from adaprune_edge.pruner import PruneConfig, prune
    from adaprune_edge.searchspace import to_prune_config

    cfg, w = to_prune_config(best.values, 256, 0)
    res = prune(ctx.model, ctx.calibration(cfg, w), cfg, cache=ctx.cache)
    rows.append(_row(target, "searched", budget_ms, res.structure, res.decoder_ratio, res.params_after,
                     score(res.model, test), measure(res.structure, profile), time.perf_counter() - t0,
                     search_recipe=best.summary(), trials=len(outcome.records)))
    _save(out_json, rows)


def _measured_best(records, profile, budget_ms):
    from adaprune_edge.structure import Structure

    for rec in sorted((r for r in records if r.feasible), key=lambda r: r.cost):
        if measure(Structure.from_dict(rec.structure), profile) <= budget_ms:
            return rec
    raise RuntimeError("no searched trial meets the measured budget")


def _row(target, name, budget_ms, st, dr, params, ppl, ms, seconds, **extra):
    return {"target": target, "recipe": name, "budget_ms": budget_ms, "decoder_ratio": dr, "params": params,
            "ppl_wikitext": ppl["wikitext"], "ppl_ptb": ppl["ptb"], "measured_ms": ms, "meets_budget": ms <= budget_ms,
            "seconds": seconds, "structure": st.condensed(), **extra}


def _save(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows}, indent=2))


def table(rows):
    lines = ["| target | recipe | decoder pruned | params | wikitext PPL | PTB PPL | measured ms/tok | budget | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['recipe']} | {r['decoder_ratio']:.1%} | {r['params'] / 1e6:.1f}M | "
                     f"{r['ppl_wikitext']:.2f} | {r['ppl_ptb']:.2f} | {r['measured_ms']:.2f} | "
                     f"{r['budget_ms']:.2f} {'ok' if r['meets_budget'] else 'MISSED'} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="0.2")
    ap.add_argument("--trials", type=int, default=20)
    args = ap.parse_args()
    import torch

    from adaprune_edge import models, profiles
    from adaprune_edge.calibration import CalibrationPool
    from adaprune_edge.structure import Structure

    torch.manual_seed(0)
    lm = models.load("default")
    base = Structure.from_model(lm.model)
    profile = profiles.load_profile("this-host")
    tail = CalibrationPool.from_sources([str(WIKI)], lm.tokenizer, 512, (0.8, 1.0)).windows[4:12]
    ptb = CalibrationPool.from_sources([str(PTB)], lm.tokenizer, 512).windows[:8]
    test = {"wikitext": tail, "ptb": ptb}
    rows = [_row(0.0, "dense", math.nan, base, 0.0, base.params(), score(lm.model, test), measure(base, profile), 0.0)]
    for t in [float(x) for x in args.targets.split(",")]:
        run_target(t, args.trials, lm, base, profile, test, rows, OUT)
    print(table(rows))
    for t in sorted({r["target"] for r in rows if r["target"]}):
        fixed = [r for r in rows if r["target"] == t and r["recipe"] not in ("searched", "dense") and r["meets_budget"]]
        s = next(r for r in rows if r["target"] == t and r["recipe"] == "searched")
        best = min(fixed, key=lambda r: r["ppl_wikitext"])
        gain = 1 - s["ppl_wikitext"] / best["ppl_wikitext"]
        print(f"target {t}: searched {s['ppl_wikitext']:.2f} vs best fixed {best['recipe']} {best['ppl_wikitext']:.2f}"
              f" → {gain:+.1%} perplexity (target ≥ +5%)")


if __name__ == "__main__":
    main()
