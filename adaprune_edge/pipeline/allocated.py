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


def option(ctx: Any, base: Structure, f16: Path, im: Any, opts: Sequence[QuantOption]) -> QuantOption | None:
    """The allocated recipe's option (its recipe file saved in the run folder), or None when no allocation
    meets the budget (the uniform candidates then say how far it is)."""
    pool = ctx.calibration_pool()
    sens = sensitivity.compute(ctx.dense.model, f16, im, pool.windows[:PROBE_WINDOWS], ctx.run.path,
                               read_header(f16)[0]["general.architecture"],
                               progress=lambda s: ctx.hooks.progress("candidates", 1, 0, f"sensitivity {s}"))
    spec = ctx.spec
    try:
        alloc = solver.fit(base, sens, ctx.device, spec.budget_ms, type_scales(opts, base, ctx.device))
    except LatencyError:
        return None
    lat = ctx.device.latency_of(base, alloc.recipe) if ctx.device.measures else None  # cached by fit
    recipe_file.save(ctx.run.file(f"alloc-{alloc.recipe.digest}.quant.json"), alloc.recipe, device=ctx.device.name,
                     budget_ms=spec.budget_ms, sensitivity=sens.key, predicted=alloc.to_dict())
    return quant_options.option(base, ctx.device, alloc.recipe, lat, spec.budget_ms, spec.max_ratio)
