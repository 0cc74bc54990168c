"""The allocated candidate of the plan: one ggml type per tensor (bitalloc/), solved under the device's
limits for the dense model, scored beside the uniform recipes the same way (llama.cpp perplexity and KL
on the objective windows) — so it ships where it wins.

Each type's latency scale (measured / predicted) comes from the uniform recipes measured on this device
(a recipe's scale is credited to the type that holds most of its bytes); where the backend measures, the
allocated file is measured too and solved again on a miss (bitalloc.solver.fit)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from adaprune_edge.archs.structure import Structure
from adaprune_edge.bitalloc import recipe_file, sensitivity, solver
from adaprune_edge.errors import LatencyError
from adaprune_edge.gguf.header import read_header
from adaprune_edge.latency.predictor import Calibration
from adaprune_edge.pipeline import quant_options
from adaprune_edge.pipeline.quant_options import QuantOption

PROBE_WINDOWS = 2  # calibration windows the KL probes run on (~1 s per probe on the default model here)


def type_scales(opts: Sequence[QuantOption], base: Structure, device: Any) -> dict[str, tuple[float, float]]:
    """ggml type → mean (decode, prompt) measured / predicted factor of the measured uniform recipes whose
    bytes it holds most of; {} where nothing was measured."""
    seen: dict[str, list[Calibration]] = {}
    for o in opts:
        if o.measured and not o.recipe.assign:
            bytes_by = Counter()
            for t in base.tensors(o.recipe):
                bytes_by[t.qtype.name] += t.n_bytes
            cal = quant_options.predictor(o, base, device).calibration
            seen.setdefault(bytes_by.most_common(1)[0][0], []).append(cal)
    return {t: (sum(c.decode for c in cs) / len(cs), sum(c.prefill for c in cs) / len(cs)) for t, cs in seen.items()}


def allocation(ctx: Any, model: Any, st: Structure, f16: Path, im: Any, scales: Any, stage: str) -> Any:
    """solver.fit for `model` (exported as `f16`, structure `st`) under the build's budget, its recipe file
    saved in the run folder (so a resumed build parses its name); None when no allocation meets it."""
    pool = ctx.calibration_pool()
    sens = sensitivity.compute(model, f16, im, pool.windows[:PROBE_WINDOWS], ctx.run.path,
                               read_header(f16)[0]["general.architecture"],
                               progress=lambda s: ctx.hooks.progress(stage, 1, 0, f"sensitivity {s}"))
    try:
        alloc = solver.fit(st, sens, ctx.device, ctx.spec.budget_ms, scales)
    except LatencyError:
        return None
    recipe_file.save(ctx.run.file(f"alloc-{alloc.recipe.digest}.quant.json"), alloc.recipe, device=ctx.device.name,
                     budget_ms=ctx.spec.budget_ms, sensitivity=sens.key, predicted=alloc.to_dict())
    return alloc


def option(ctx: Any, base: Structure, f16: Path, im: Any, opts: Sequence[QuantOption]) -> QuantOption | None:
    """The dense model's allocated recipe as a candidate option, or None when no allocation meets the
    budget (the uniform candidates then say how far it is)."""
    alloc = allocation(ctx, ctx.dense.model, base, f16, im, type_scales(opts, base, ctx.device), "candidates")
    if alloc is None:
        return None
    lat = ctx.device.latency_of(base, alloc.recipe) if ctx.device.measures else None  # cached by fit
    return quant_options.option(base, ctx.device, alloc.recipe, lat, ctx.spec.budget_ms, ctx.spec.max_ratio)


def pruned(ctx: Any, model: Any, st: Structure, f16: Path, im: Any) -> Any:
    """The pruned model's own allocation under the budget (pruning frees bytes; the allocation spends them
    on the tensors where they buy the most), or None."""
    opts = ctx.state.candidates.options
    return allocation(ctx, model, st, f16, im, type_scales(opts, ctx.state.candidates.base_structure, ctx.device),
                      "export")
