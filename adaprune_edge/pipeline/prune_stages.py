"""The `search` and `prune` stages of `build`: SMAC over pruning recipes at the plan's quant recipe, or over
the plan's quant choices too (resumable trial by trial), then the full model pruned with the confirmed
best trial's recipe, which export quantizes with that trial's quant. Both are skipped when the plan ships
the dense model quantized."""

from __future__ import annotations

import shutil

from adaprune_edge.pipeline.context import BuildContext
from adaprune_edge.pipeline.results import Confirmation, Plan, Pruned, SearchDone
from adaprune_edge.errors import LatencyError
from adaprune_edge.latency import budget
from adaprune_edge.archs.slicing import save_pruned
from adaprune_edge.search.cluster import dask_client
from adaprune_edge.search.evaluators import DaskEvaluator, LocalEvaluator
from adaprune_edge.search.run import run_search
from adaprune_edge.search.trials import TrialRecord

CONFIRM_AT_MOST = 5  # trials re-measured (best first) before the search is declared a miss


def stage_search(ctx: BuildContext) -> SearchDone:
    """SMAC search in run/search (resumable trial by trial); skipped when quantization alone wins."""
    sctx = ctx.search_context()  # also generates builtin:self once, before any dask worker
    if ctx.quant_only():
        return SearchDone(n_trials=0, feasible=0, data_sets=sctx.data_sets(rescoring=False), skipped=ctx.plan.reason)
    data_sets = sctx.data_sets()
    spec, folder = ctx.search_spec(), ctx.run.file("search")
    resume = (folder / "search.json").exists()
    if ctx.spec.workers > 1 or ctx.spec.scheduler:
        with dask_client(ctx.spec.workers, ctx.spec.scheduler) as client:
            out = run_search(spec, folder, resume=resume, evaluator=DaskEvaluator(spec, client), on_trial=ctx.hooks.trial)
    else:
        ev = LocalEvaluator(spec, ctx.search_context())
        out = run_search(spec, folder, resume=resume, evaluator=ev, on_trial=ctx.hooks.trial)
    best, checked = confirmed_best(ctx, out.ranked())
    shutil.copyfile(folder / "trials.csv", ctx.run.file("trials.csv"))
    return SearchDone(n_trials=len(out.records), feasible=sum(r.feasible for r in out.records), data_sets=data_sets,
                      best=best, confirmations=tuple(checked), pareto=tuple(r.index for r in out.pareto),
                      rescored=tuple(out.rescored), cost=shipped_cost(out.cost(), best, checked))


def shipped_cost(cost: dict, best: TrialRecord, checked: list[Confirmation]) -> dict:
    """The search's cost, plus the trial that ships when it is not the search's choice: the better-ranked
    trials missed the budget when measured (screened on the roofline, confirmed on the device)."""
    if (cost.get("chosen") or {}).get("index") == best.index:
        return cost
    missed = [c.trial for c in checked if not c.ok]
    return {**cost, "shipped": {"index": best.index, "cost": best.cost, "recipe": best.summary(), "missed_when_measured": missed}}


def confirmed_best(ctx: BuildContext, ranked: list[TrialRecord]) -> tuple[TrialRecord, list[Confirmation]]:
    """The first of the ranked feasible trials (search/rescore.py: re-scored best first) whose structure also
    meets the budget when measured with the device's backend (trials are screened with the roofline; the
    incumbent is always re-measured)."""
    checked: list[Confirmation] = []
    for rec in ranked:
        st, quant = rec.structure, rec.quant or ctx.plan.quant  # each trial at its own quant recipe
        lat = ctx.device.latency_of(st, quant)
        ok, why = budget.budget_ok(st, ctx.profile, quant, lat, ctx.spec.budget_ms)
        checked.append(Confirmation(rec.index, quant, lat.decode_ms_per_token, lat.prefill_tps, lat.measured, ok, why))
        if ok:
            return rec, checked
        if len(checked) >= CONFIRM_AT_MOST:
            break
    last = f"the last measured, trial {checked[-1].trial}: {checked[-1].reason}" if checked else "no feasible trial"
    raise LatencyError(f"none of the {len(checked)} best of {len(ranked)} trials met the budget when measured ({last}); "
                       "raise --trials or --max-ratio, or relax the budget")


def stage_prune(ctx: BuildContext) -> Pruned:
    """Prune the full model with the best trial's recipe (same calibration windows) and save it."""
    if ctx.quant_only():
        return nothing_pruned(ctx.plan)
    best = ctx.state.search.best
    cfg, res = ctx.search_context().reprune(best, progress=lambda d, t: ctx.hooks.progress("prune", d, t, "calibration batches"))
    tmp, final = ctx.run.file(".pruned.tmp"), ctx.run.file("pruned")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pruned(res.model, ctx.dense.tokenizer, tmp, recipe={"config": cfg.to_dict(), "search_values": best.values,
                                                              "source_model": ctx.spec.model})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    ctx._cache["pruned"] = res.model
    return Pruned.from_dict({**res.to_dict(), "matches_search_trial": res.structure == best.structure})


def nothing_pruned(plan: Plan) -> Pruned:
    """The prune stage's result when the plan ships the dense model."""
    return Pruned(structure=plan.base_structure, params_before=plan.dense_params, params_after=plan.dense_params,
                  decoder_params_after=plan.dense_decoder_params, decoder_ratio=0.0, total_ratio=0.0,
                  decoder_params_before=plan.dense_decoder_params, skipped=plan.reason)
