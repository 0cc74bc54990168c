"""The first two stages of `build`: which quant recipes meet the budget (and at what pruning ratio), and
the decision between shipping a dense quantized file and pruning + quantizing.

`candidates`: every recipe's dense latency on the device and r_min; the dense F16 GGUF, the importance
matrix, and the measured llama.cpp perplexity of the recipes worth scoring, on the search-objective
windows. `plan`: the best quant-only option vs the warm-start pruning recipe at r_min for the most
promising recipes that need pruning (torch perplexity x that recipe's measured quantization factor);
pruning is searched only when it can win — over the quant recipes that can, as a dimension of the search —
and export checks the shipped file against quant-only again."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from adaprune_edge.exporters import imatrix
from adaprune_edge.pipeline import allocated, quant_options
from adaprune_edge.pipeline.context import BuildContext
from adaprune_edge.pipeline.quant_options import QuantOption
from adaprune_edge.pipeline.results import Candidates, Plan, PrunedEstimate
from adaprune_edge.errors import LatencyError
from adaprune_edge.exporters import gguf, vocab
from adaprune_edge.exporters.imatrix import Imatrix
from adaprune_edge.latency import budget
from adaprune_edge.runtime import kvcache
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.recover import estimate
from adaprune_edge.search.plan import SearchPlan, make_plan
from adaprune_edge.search.warmstart import warm_start_configs
from adaprune_edge.search.space import build_space, plain
from adaprune_edge.search.spec import QuantChoice
from adaprune_edge.archs.structure import Structure

SCORE_QUANT_ONLY = 6  # quant-only recipes scored (most bytes first; bytes alone do not rank quality:
# on SmolLM2 Q4_0 with an imatrix (90.1 MB) and Q4_K_M:fb=IQ4_NL:out=Q5_0 (82.5 MB) are close)
SCORE_PRUNABLE = 3  # recipes that need pruning scored (smallest r_min first, >= 4 bits/weight)
IMATRIX_WINDOWS = 16  # x max_seq_len (256) tokens: ~10 s of torch forwards on the default model here
SCORING_ROUNDS = 3  # score, measure the real files, score what their figures make promising: at most 3 times
TRY_PRUNED = 1  # of those, how many get a warm-start pruning trial in `plan` (~1 min each here)
PRIOR_NATS_PER_RATIO = 2.0  # ranking prior only: log-PPL cost of pruning a unit share of the decoder



def _worth_scoring(opts: list[QuantOption]) -> set[QuantRecipe]:
    only = sorted((o for o in opts if o.quant_only), key=lambda o: -o.file_bytes)[:SCORE_QUANT_ONLY]
    need = sorted((o for o in opts if o.r_min), key=lambda o: o.r_min)
    four = [o for o in need if o.bits_per_weight >= 4.0] or need
    allocated_ = [o for o in opts if o.recipe.assign and o.quant_only]
    return {o.recipe for o in only + four[:SCORE_PRUNABLE] + allocated_}


def stage_candidates(ctx: BuildContext) -> Candidates:
    """Latency and r_min of every quant recipe; dense F16 + imatrix; llama.cpp PPL of the promising ones,
    whose real files are then measured where the backend measures (a recipe the real file shows to need
    pruning makes room for the next one)."""
    base = Structure.from_model(ctx.dense.model)
    names = quant_options.recipes(ctx.spec.quant, ctx.spec.imatrix)
    ctx.use_kv_cache(kv_cache_for(base, names, ctx.profile))
    opts = quant_options.options(base, ctx.device, names, ctx.spec.budget_ms, ctx.spec.max_ratio)
    if all(o.r_min is None for o in opts):
        raise LatencyError(quant_options.unreachable_message(opts, ctx.spec.max_ratio))
    f16 = dense_f16(ctx)
    im = dense_imatrix(ctx) if ctx.spec.imatrix else None
    windows = ctx.objective_windows().numpy()
    if ctx.spec.quant is None and im is not None:  # one more candidate: a type per tensor under the budget
        alloc = allocated.option(ctx, base, f16, im, opts)
        opts += [alloc] if alloc is not None else []
    for _ in range(SCORING_ROUNDS):  # until every recipe worth scoring is scored (and measured on its file)
        keep = _worth_scoring(opts)
        opts = quant_options.score(opts, f16, ctx.run.path, windows, im, lambda o: o.recipe in keep,
                                   progress=lambda r: ctx.hooks.progress("candidates", 1, 0, f"scoring {r}"),
                                   reference=ctx.dense.model)
        opts = quant_options.remeasured(opts, base, ctx.device, ctx.run.path, ctx.spec.budget_ms, ctx.spec.max_ratio)
        if _worth_scoring(opts) <= {o.recipe for o in opts if o.ppl is not None}:
            break
    if all(o.r_min is None for o in opts):
        raise LatencyError(quant_options.unreachable_message(opts, ctx.spec.max_ratio))
    return Candidates(tuple(opts), str(f16), round(quant_options.gguf_ppl(f16, windows), 4),
                      str(ctx.run.file("imatrix.gguf")) if im is not None else None, base, tuple(windows.shape),
                      kv_cache=ctx.profile.kv_cache_type)


def kv_cache_for(base: Structure, names: list[QuantRecipe], profile: Any) -> str:
    """The K/V cache type (from the profile's on: F16 → Q8_0 → Q4_0) under which the largest dense recipe
    fits the memory limit at the context length; the least aggressive one among equals. Weight bits go
    before cache bits: a quantized cache costs less quality than a smaller weight type (bench/kv_cache.py),
    and it is the only lever for memory at long context short of removing layers or KV groups. The
    profile's type when nothing fits (the plan then names the best reachable figure)."""
    start = kvcache.ORDER.index(kvcache.check(profile.kv_cache_type))
    best, largest = kvcache.check(profile.kv_cache_type), -1
    for kv in kvcache.ORDER[start:]:
        p = dataclasses.replace(profile, kv_cache_type=kv)
        fits = [base.gguf_bytes(n) for n in names if budget.ram_of(base, n, p) <= p.usable_ram_bytes]
        if fits and max(fits) > largest:
            best, largest = kv, max(fits)
    return best


def dense_f16(ctx: BuildContext) -> Path:
    """The dense model as an F16 GGUF in the run directory (the quantizer's input)."""
    path = ctx.run.file("dense-F16.gguf")
    if not path.is_file():
        meta = vocab.for_model(ctx.dense, Structure.from_model(ctx.dense.model).vocab)
        gguf.write_model(ctx.dense.model, path, meta, name=f"{Path(ctx.spec.model).stem}",
                         source_model=ctx.spec.model)
    return path


def dense_imatrix(ctx: BuildContext) -> Imatrix:
    path = ctx.run.file("imatrix.gguf")
    if path.is_file():
        return Imatrix.load(path)
    im = collect_imatrix(ctx, ctx.dense.model)
    im.save(path)
    return im


def collect_imatrix(ctx: BuildContext, model: Any) -> Imatrix:
    """Importance matrix of `model` on the calibration pool (never the objective or report windows)."""
    pool = ctx.calibration_pool()
    wins = pool.windows[pool.sample(min(IMATRIX_WINDOWS, len(pool)), "random", ctx.spec.seed)]
    return imatrix.collect(model, wins, tuple(pool.sources),
                           progress=lambda d, t: ctx.hooks.progress("imatrix", d, t, "windows"))


# -- plan ---------------------------------------------------------------------------------------------
def _prior(o: QuantOption) -> float:
    return math.log(o.ppl) + PRIOR_NATS_PER_RATIO * (o.r_min or 0.0)


def pruned_estimate(ctx: BuildContext, o: QuantOption, f16_ppl: float) -> dict[str, Any]:
    """The search's first warm start (LLM-Pruner-like taylor/uniform + least-squares reconstruction; plain
    taylor/uniform where the family cannot reconstruct) at r_min for recipe o: torch
    perplexity on the objective windows, after the build's recovery allowance as the measured gap-closure
    curve predicts it (recover/estimate.py), x o's measured quantization factor."""
    # the trial solves its own ratio on the roofline calibrated by o's dense measurement (uncalibrated, the
    # roofline can put it far below r_min: on this host's slower-than-profiled days, near 0)
    cal = quant_options.predictor(o, ctx.state.candidates.base_structure, ctx.device).calibration
    spec = ctx.search_spec_for(o.recipe, o.r_min, min(0.9, o.r_min + 0.1), cal.decode, cal.prefill)  # the solver's ceiling
    sctx = ctx.data_context().derive(spec)  # the same data: calibration is not tokenized twice
    space = build_space(spec.bounds, ctx.spec.seed)  # uniform-only families cannot reconstruct
    values = plain(warm_start_configs(space, spec.bounds, ("llm-pruner-like+lsq", "taylor-uniform"))[0])
    rec = sctx.evaluate(0, values)
    unrecovered = rec.ppl * o.ppl / f16_ppl if rec.feasible and rec.ppl else math.inf
    recovery = estimate.recovered(ctx.spec, rec.ppl, f16_ppl) if rec.feasible and rec.ppl else None
    est = recovery.ppl * o.ppl / f16_ppl if recovery else unrecovered
    return {"recipe": o.recipe, "r_min": o.r_min, "trial_ratio": rec.decoder_ratio, "torch_ppl": rec.ppl, "quant_factor": o.ppl / f16_ppl,
            "unrecovered_ppl": unrecovered, "recovery": recovery, "estimated_ppl": est, "feasible": rec.feasible,
            "reason": rec.budget_reason}


def decide(ctx: BuildContext, opts: list[QuantOption], f16_ppl: float) -> dict[str, Any]:
    """mode 'quant-only' (ship the best dense quantized file) or 'prune' (search at the chosen recipe)."""
    best = quant_options.best_quant_only(opts)
    # pruning only adds loss to a recipe's dense quantized model, so a recipe whose dense file already
    # scores worse than the best quant-only file cannot win: it is not worth a pruning trial
    need = sorted((o for o in opts if o.r_min and o.ppl and (best is None or o.ppl < best.ppl)), key=_prior)[:TRY_PRUNED]
    tried = [pruned_estimate(ctx, o, f16_ppl) for o in need]
    pruned = min(tried, key=lambda t: t["estimated_ppl"], default=None)
    # the warm start is one of the search's trials, so the search is worth its minutes only where pruning
    # already wins; export checks the searched file against quant-only again
    if best is not None and (pruned is None or pruned["estimated_ppl"] >= best.ppl):
        why = (f"quantization alone meets the budget best: {best.recipe} (PPL {best.ppl:.2f})"
               + (f" vs pruning {pruned['r_min']:.1%} of the decoder at {pruned['recipe']} (estimated PPL "
                  f"{pruned['estimated_ppl']:.2f}{_after_recovery(pruned)})" if pruned else ""))
        return {"mode": "quant-only", "quant": best.recipe, "reason": why, "pruned_estimates": tried}
    if pruned is None or not math.isfinite(pruned["estimated_ppl"]):
        raise LatencyError("no quant recipe meets the budget on its own and no pruned candidate could be "
                           "evaluated; relax the budget or raise --max-ratio")
    why = (f"pruning {pruned['r_min']:.1%} of the decoder at {pruned['recipe']} (estimated PPL "
           f"{pruned['estimated_ppl']:.2f}{_after_recovery(pruned)}) " + (f"can beat quantization alone ({best.recipe}, PPL {best.ppl:.2f})"
                                                 if best else "is needed: no quant recipe meets the budget alone"))
    return {"mode": "prune", "quant": pruned["recipe"], "reason": why, "pruned_estimates": tried}


def _after_recovery(pruned: dict[str, Any]) -> str:
    r = pruned.get("recovery")
    return f" after recovery of ~{r.tokens // 1000}k tokens; {pruned['unrecovered_ppl']:.2f} without" if r else ""


def stage_plan(ctx: BuildContext) -> Plan:
    """Decide quant-only vs prune; for prune, solve r_min at the chosen recipe and the search bounds; the
    dense model's latency at the chosen recipe."""
    cand: Candidates = ctx.state.candidates
    choice = decide(ctx, list(cand.options), cand.dense_f16_ppl)
    if cand.kv_cache != "F16":
        choice["reason"] += (f"; K/V cache {cand.kv_cache}: it lets larger weights fit "
                             f"{ctx.profile.usable_ram_bytes / 2**20:.0f} MiB at {ctx.profile.context_length} tokens")
    base = cand.base_structure
    common = dict(mode=choice["mode"], quant=choice["quant"], reason=choice["reason"],
                  pruned_estimates=tuple(PrunedEstimate(**t) for t in choice["pruned_estimates"]),
                  device=ctx.device.name, profile=ctx.profile,
                  base_structure=base, dense_params=base.params(), dense_decoder_params=base.decoder_params(),
                  model_info=ctx.dense.info, dense_latency=ctx.device.latency_of(base, choice["quant"]),
                  recovery_estimate=next((t.get("recovery") for t in choice["pruned_estimates"]
                                          if t["recipe"] == choice["quant"]), None))
    if choice["mode"] == "quant-only":
        limit = ctx.spec.budget_ms if ctx.spec.budget_ms is not None else ctx.profile.budget.decode_limit_ms
        return Plan(**common, budget_ms=limit, r_min=0.0, latency_scale=1.0, bounds=None)
    plan = make_plan(base, ctx.device, choice["quant"], ctx.spec.budget_ms, ctx.spec.max_ratio,
                     max_samples=ctx.spec.max_samples, max_seq_len=ctx.spec.max_seq_len)
    quants = quant_choices(ctx, list(cand.options), cand.dense_f16_ppl, plan)
    return Plan(**common, budget_ms=plan.budget_ms, r_min=plan.r_min, latency_scale=plan.latency_scale,
                bounds=plan.bounds, solution=plan.solution, quants=quants, prefill_scale=plan.prefill_scale)


def quant_choices(ctx: BuildContext, opts: list[QuantOption], f16_ppl: float,
                  plan: SearchPlan) -> tuple[QuantChoice, ...]:
    """The recipes the pruning search chooses among, the plan's first: those that need pruning and reach the
    budget within the plan's max ratio (0 < r_min < r_max) with a measured PPL below the best quant-only
    file's (pruning only adds loss, so a worse dense file cannot win; r_min 0 is the quant-only file export
    compares against). penalty = log(PPL_recipe / PPL_F16) in nats/token; latency scale: the plan's for its
    recipe, the dense model's measured / predicted for the others. () when fewer than two qualify."""
    best = quant_options.best_quant_only(opts)
    ok = [o for o in opts if o.r_min and o.r_min < plan.bounds.r_max and o.ppl and math.isfinite(o.ppl)
          and (best is None or o.ppl < best.ppl)]
    ok.sort(key=lambda o: o.recipe != plan.quant)  # the plan's recipe first: the space's default
    if len(ok) < 2 or ok[0].recipe != plan.quant:
        return ()
    return tuple(QuantChoice(o.recipe, round(math.log(o.ppl / f16_ppl), 6), _latency_scale(ctx, plan, o)) for o in ok)


def _latency_scale(ctx: BuildContext, plan: SearchPlan, o: QuantOption) -> float:
    """measured / predicted decode latency at o's recipe (1.0 where the device only predicts)."""
    if o.recipe == plan.quant:
        return plan.latency_scale
    if not o.measured:
        return 1.0
    return quant_options.predictor(o, ctx.state.candidates.base_structure, ctx.device).calibration.decode
