"""The `validate` stage of `build`: the shipped GGUF checked the way the device will run it — parity
gate (F16 GGUF vs torch), quantized PPL/KL vs the dense model on the report set, latency, RAM (predicted
and measured in a fresh llama.cpp process), zero-shot tasks and general text — beside the best
quantize-only file scored the same way."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from adaprune_edge.pipeline.context import BuildContext
from adaprune_edge.pipeline.export_stage import pruned_model
from adaprune_edge.pipeline.quant_options import best_quant_only, dense_file
from adaprune_edge.pipeline.results import QuantOnly, TaskScores, Validated
from adaprune_edge.errors import DataError, LatencyError
from adaprune_edge.evaluate import general_text as gt
from adaprune_edge.evaluate import harness, tasks, validation
from adaprune_edge.evaluate.runtime_ram import measure_runtime_ram
from adaprune_edge.evaluate.validation import ValidationReport
from adaprune_edge.latency import budget
from adaprune_edge.latency.backends import LatencyReport


def stage_validate(ctx: BuildContext) -> Validated:
    ex = ctx.state.export
    st, recipe, n_ctx = ex.structure, ex.quant, ctx.profile.context_length
    # latency first, while the process is idle (a loaded Llama left from the PPL pass would hold RAM and
    # threads during the measurement)
    gc.collect()
    lat = ex.latency or ctx.device.latency_of_file(Path(ex.gguf), st, recipe)  # export measured it once written
    windows = ctx.report_windows().numpy()
    step = lambda n: ctx.hooks.progress("validate", n, 0, "windows")  # noqa: E731
    f16 = validation.validate(ex.f16, windows, torch_model=pruned_model(ctx), threads=ctx.device.local_threads or 2,
                              progress=step)
    kv = ctx.profile.kv_cache_type
    q = validation.validate(ex.gguf, windows, torch_model=ctx.dense.model, tokenizer=ctx.dense.tokenizer,
                            threads=2, progress=step, kv_cache=kv)
    ok, why = budget.budget_ok(st, ctx.profile, recipe, lat, ctx.spec.budget_ms)
    ram_bytes = budget.ram_of(st, recipe, ctx.profile)
    # the context filled, so the K/V cache and attention scratch are resident as on the device at that context
    ram = measure_runtime_ram(ex.gguf, n_ctx=n_ctx, threads=2, predicted_bytes=ram_bytes, kv_cache=kv, fill=n_ctx,
                              timeout_s=900)
    model_rss = ram.peak_rss_bytes - ram.baseline_rss_bytes  # llama.cpp's own, without the Python interpreter
    if not ok or model_rss > ctx.profile.usable_ram_bytes:
        raise LatencyError(f"the shipped file {Path(ex.gguf).name} misses the budget as measured: "
                           + (why if not ok else f"runtime RSS {model_rss / 2**20:.0f} MiB > "
                              f"{ctx.profile.usable_ram_bytes / 2**20:.0f} MiB usable"))
    return Validated(f16=f16, quant=q, latency=lat, budget_met=ok, budget_reason=why, ram_bytes=ram_bytes,
                     runtime_ram=ram, quant_only=quant_only_row(ctx, windows, q, lat),
                     zero_shot=zero_shot(ctx, ex.gguf), general_text=general_text(ctx, ex.gguf))


def quant_only_row(ctx: BuildContext, windows: Any, shipped_q: ValidationReport,
                   shipped_lat: LatencyReport) -> QuantOnly | None:
    """The best dense quantized file that meets the budget, scored like the shipped one (report windows,
    KL vs the dense torch model), so the report shows what pruning bought. None when no recipe meets it."""
    cand = ctx.state.candidates
    best = best_quant_only(list(cand.options))
    if best is None:
        return None
    path = dense_file(ctx.run.path, best.recipe)
    if ctx.quant_only():
        q, lat = shipped_q, shipped_lat
    else:
        q = validation.validate(path, windows, torch_model=ctx.dense.model, threads=2,
                                kv_cache=ctx.profile.kv_cache_type)
        lat = ctx.device.latency_of_file(path, cand.base_structure, best.recipe)
    return QuantOnly(recipe=best.recipe, file_bytes=path.stat().st_size, decode_ms_per_token=lat.decode_ms_per_token,
                     measured=lat.measured, ppl=q.ppl, kl_vs_dense=q.kl_mean, top1=q.top1, objective_ppl=best.ppl)


def zero_shot(ctx: BuildContext, gguf_path: str) -> dict[str, TaskScores]:
    """Accuracy of the dense torch model and of the shipped GGUF on the local tasks (seeded subset)."""
    if ctx.spec.data_dir is None or not ctx.spec.tasks or ctx.spec.eval_limit <= 0:
        return {}
    out: dict[str, TaskScores] = {}
    scorer = harness.GGUFScorer.open(gguf_path, n_ctx=1024, threads=2)
    dense = harness.TorchScorer(ctx.dense.model, ctx.dense.tokenizer)
    try:
        for name in ctx.spec.tasks:
            try:
                data = tasks.load(name, ctx.spec.data_dir)
            except DataError as e:
                out[name] = TaskScores(skipped=str(e))
                continue
            step = lambda n, name=name: ctx.hooks.progress("zero-shot", n, 0, name)  # noqa: E731
            out[name] = TaskScores(dense=harness.evaluate_task(dense, data, ctx.spec.eval_limit, progress=step),
                                   pruned=harness.evaluate_task(scorer, data, ctx.spec.eval_limit, progress=step))
    finally:
        scorer.llm.close()
    return out


def general_text(ctx: BuildContext, gguf_path: str) -> dict[str, gt.TextScores]:
    """wikitext-2 / PTB valid perplexity, dense vs shipped, when --data-dir is given (general_text.py)."""
    if ctx.spec.data_dir is None:
        return {}
    sources = [src for src, _ in ctx.search_context().split.calib]
    step = lambda n: ctx.hooks.progress("general text", n, 0, "windows")  # noqa: E731
    return gt.evaluate(gguf_path, ctx.dense.model, ctx.dense.tokenizer, ctx.spec.data_dir, sources,
                       ctx.spec.report_windows, ctx.spec.val_seq_len, progress=step)
