"""The `recover` stage of `build`: distil the pruned model from the dense one (recover/distill.py) on the
recovery text set, bounded by --recover-minutes / --recover-tokens, resumable from its checkpoint in
run/recover-work; the result goes to run/recovered (the folder format `prune` writes), which export reads.
Skipped when the dense model ships or when no recovery allowance is given."""

from __future__ import annotations

import shutil
import time
from typing import Any

from adaprune_edge.pipeline.context import BuildContext
from adaprune_edge.pipeline.results import Recovered
from adaprune_edge.evaluate.perplexity import perplexity
from adaprune_edge.archs.slicing import load_pruned, read_recipe, save_pruned
from adaprune_edge.recover.config import RecoverConfig
from adaprune_edge.recover.distill import gap_closed, recover
from adaprune_edge.recover.text import check_disjoint, recovery_windows

FOLDER, WORK = "recovered", "recover-work"


def recover_config(spec: Any) -> RecoverConfig:
    return RecoverConfig(train=spec.recover_train, max_tokens=spec.recover_tokens, max_minutes=spec.recover_minutes,
                         seed=spec.seed)


def stage_recover(ctx: BuildContext) -> Recovered:
    s = ctx.spec
    if ctx.quant_only():
        return Recovered(skipped="the dense model ships: nothing was pruned")
    if not s.recover_minutes and not s.recover_tokens:
        return Recovered(skipped="no recovery allowance (--recover-minutes 0 and no --recover-tokens)")
    check_disjoint(s.recover_text, s.calib, s.val)
    cfg = recover_config(s).validate()
    windows, text = recovery_windows(list(s.recover_text), ctx.dense, cfg.seq_len, s.seed, s.recover_self_tokens,
                                     progress=lambda d, t, note: ctx.hooks.progress("recovery text", d, t, note))
    student = load_pruned(ctx.run.file("pruned"))[0]  # the saved prune (a resumed run recovers the same one)
    report = ctx.report_windows()
    before = perplexity(student, report)
    res = recover(student, ctx.dense.model, windows, cfg, ctx.run.file(WORK), progress=_progress(ctx, cfg))
    after, dense = perplexity(student, report), perplexity(ctx.dense.model, report)
    _save(ctx, student, res, text)
    ctx._cache["pruned"] = student
    # the plan predicted a share of the log-PPL gap closed (recover/estimate.py); this is the share measured
    return Recovered(result=res, text=text, report_ppl_before=round(before, 4),
                     report_ppl_after=round(after, 4), report_ppl_dense=round(dense, 4),
                     closure_measured=round(gap_closed(before, after, dense), 4), estimate=ctx.plan.recovery_estimate)


def _progress(ctx: BuildContext, cfg: RecoverConfig) -> Any:
    """Progress in tokens under a token bound, else in seconds of the minutes bound."""
    t0 = time.perf_counter()
    if cfg.max_tokens:
        return lambda d, t, note: ctx.hooks.progress("recover", d, t, f"tokens · {note}")
    total = int(cfg.max_minutes * 60)
    return lambda d, t, note: ctx.hooks.progress("recover", min(total, int(time.perf_counter() - t0)), total,
                                                 f"s · {d} tokens · {note}")


def _save(ctx: BuildContext, student: Any, res: Any, text: Any) -> None:
    tmp, final = ctx.run.file(f".{FOLDER}.tmp"), ctx.run.file(FOLDER)
    shutil.rmtree(tmp, ignore_errors=True)
    recipe = {**read_recipe(ctx.run.file("pruned")), "recovery": {**res.to_dict(), "text": text.to_dict()}}
    save_pruned(student, ctx.dense.tokenizer, tmp, recipe=recipe)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(ctx.run.file(WORK), ignore_errors=True)  # the checkpoint served its purpose
