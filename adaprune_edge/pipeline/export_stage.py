"""The `export` stage of `build`: F16 GGUF (llama or deci) → llama.cpp quantization with the shipped
recipe (the best search trial's quant, else the plan's: BuildContext.quant) and an importance matrix of
the shipped model → Ollama Modelfile.

Two guarantees. Quality: a pruned file that the best quant-only file beats on the objective windows is
not shipped; the quant-only file is (never worse than plain quantization). Budget: the shipped file is
measured once written (where the backend measures); if it misses any stated limit, the next dense
candidate (by objective perplexity) that meets them all as measured ships instead, and if none does the
build stops with one line naming the best reachable figure — it never ships a file that misses."""

from __future__ import annotations

import dataclasses
import gc
import shutil
from pathlib import Path
from typing import Any

from adaprune_edge.bitalloc import recipe_file
from adaprune_edge.pipeline import allocated
from adaprune_edge.pipeline.context import BuildContext
from adaprune_edge.pipeline.plan_stages import collect_imatrix
from adaprune_edge.pipeline.quant_options import best_quant_only, dense_file, gguf_ppl
from adaprune_edge.pipeline.results import Exported
from adaprune_edge.errors import LatencyError
from adaprune_edge.exporters import gguf, modelfile, quantize, vocab
from adaprune_edge.gguf.header import read_header
from adaprune_edge.gguf.keys import GENERAL_ARCHITECTURE
from adaprune_edge.latency import budget
from adaprune_edge.latency.backends import LatencyReport
from adaprune_edge.latency.budget import Constraint
from adaprune_edge.archs.slicing import load_pruned
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.runs import write_text
from adaprune_edge.archs.structure import Structure


MAX_FALLBACKS = 4  # dense candidates measured after a miss before the build gives up


def stage_export(ctx: BuildContext) -> Exported:
    meta = vocab.for_model(ctx.dense, ctx.dense.info.vocab)
    out = export_dense(ctx) if ctx.quant_only() else export_pruned(ctx, meta)
    out = within_budget(ctx, out)
    write_text(ctx.run.file("Modelfile"), modelfile.render(Path(out.gguf), meta.chat_template))
    if out.quant.assign:  # the allocation next to the file: `export --quant-file` writes the same again
        recipe_file.save(recipe_file.path_for(Path(out.gguf)), out.quant, device=ctx.device.name,
                         budget_ms=ctx.spec.budget_ms)
    return out


def shipped_name(recipe: QuantRecipe) -> str:
    """model-Q4_K_M.gguf, model-Q4_K_M_fb-IQ4_NL.gguf (whether an imatrix was used is in report.json)."""
    return f"model-{recipe.with_imatrix(False).label}.gguf"


def pruned_model(ctx: BuildContext) -> Any:
    """The shipped torch model: the pruned one (after recovery when the recover stage ran), or the dense one
    when quantization alone ships."""
    if ctx.quant_only():
        return ctx.dense.model
    rec = ctx.state.recover
    folder = "pruned" if rec is None or rec.skipped else "recovered"
    return ctx.memo("pruned", lambda: load_pruned(ctx.run.file(folder))[0])


def export_dense(ctx: BuildContext, why: str | None = None, recipe: QuantRecipe | None = None) -> Exported:
    """Ship the dense model quantized with the plan's quant-only recipe (already written by `candidates`),
    or with `recipe` / the best quant-only recipe when `why` says the planned file lost or missed."""
    cand = ctx.state.candidates
    recipe = recipe or (ctx.quant if why is None else best_quant_only(list(cand.options)).recipe)
    st = cand.base_structure
    f16, qpath = ctx.run.file("model-F16.gguf"), ctx.run.file(shipped_name(recipe))
    shutil.copyfile(cand.dense_f16, f16)
    shutil.copyfile(dense_file(ctx.run.path, recipe), qpath)
    return Exported(arch=read_header(qpath)[0][GENERAL_ARCHITECTURE], f16=str(f16), f16_bytes=f16.stat().st_size, gguf=str(qpath), quant=recipe,
                    pruned=False, replaced_pruned=why, quant_report=quantize.report(qpath, st, recipe),
                    structure=st)


def export_pruned(ctx: BuildContext, meta: Any) -> Exported:
    model = pruned_model(ctx)
    st = Structure.from_model(model)
    f16, qpath = ctx.run.file("model-F16.gguf"), ctx.run.file(shipped_name(ctx.quant))
    name = f"{Path(ctx.spec.model).stem}-adaprune-{ctx.device.name}"
    res = gguf.write_model(model, f16, meta, name=name, source_model=ctx.spec.model,
                           recipe=ctx.state.prune.config.to_dict(),
                           progress=lambda n, d, t: ctx.hooks.progress("export", d, t, n))
    im = collect_imatrix(ctx, model) if ctx.quant.imatrix else None
    quantize.quantize(f16, qpath, ctx.quant, threads=ctx.device.local_threads, imatrix=im)
    windows = ctx.objective_windows().numpy()
    recipe, ppl = ctx.quant, gguf_ppl(qpath, windows)
    if ctx.spec.quant is None and im is not None:  # the pruned model's own allocation, if it scores better
        recipe, qpath, ppl = _allocated_if_better(ctx, model, st, f16, im, (recipe, qpath, ppl), windows)
    # the guarantee: measured on the objective windows, plain quantization must not win
    best = best_quant_only(list(ctx.state.candidates.options))
    if best is not None and ppl > best.ppl:
        qpath.unlink()
        return export_dense(ctx, f"the pruned {recipe} file (objective PPL {ppl:.2f}) lost to "
                                 f"quantization alone ({best.recipe}, {best.ppl:.2f})")
    return Exported(arch=res.arch, f16=str(f16), f16_bytes=f16.stat().st_size, gguf=str(qpath), quant=recipe,
                    pruned=True, objective_ppl=ppl, quant_report=quantize.report(qpath, st, recipe),
                    structure=st)


def _allocated_if_better(ctx: BuildContext, model: Any, st: Structure, f16: Path, im: Any,
                         uniform: tuple[QuantRecipe, Path, float], windows: Any) -> tuple[QuantRecipe, Path, float]:
    """(recipe, file, objective PPL) of the pruned model: its allocation's file where that scores lower than
    the uniform recipe's (whose file is then removed), else the uniform one."""
    alloc = allocated.pruned(ctx, model, st, f16, im)
    if alloc is None:
        return uniform
    path = ctx.run.file(shipped_name(alloc.recipe))
    quantize.quantize(f16, path, alloc.recipe, threads=ctx.device.local_threads, imatrix=im)
    ppl = gguf_ppl(path, windows)
    if ppl >= uniform[2]:
        path.unlink()
        return uniform
    uniform[1].unlink()
    return alloc.recipe, path, ppl


def measured(ctx: BuildContext, path: Path, st: Structure, recipe: QuantRecipe) -> tuple[LatencyReport, list[Constraint]]:
    """The file measured afresh (cached for validate) and every stated limit checked on it."""
    gc.collect()  # measure while this process holds no llama.cpp model
    lat = ctx.device.latency_of_file(path, st, recipe, fresh=True)
    ram = budget.ram_of(st, recipe, ctx.profile)
    return lat, budget.constraints(lat, ram, ctx.profile, ctx.spec.budget_ms)


def within_budget(ctx: BuildContext, out: Exported) -> Exported:
    """`out` with its measured figures if it meets every limit; else the first dense candidate (lowest
    objective PPL first) that does, measured; else LatencyError naming the best reachable figure."""
    lat, checks = measured(ctx, Path(out.gguf), out.structure, out.quant)
    missed: list[tuple[str, Constraint]] = []
    if all(c.ok for c in checks):
        return dataclasses.replace(out, latency=lat, constraints=tuple(c.to_dict() for c in checks))
    missed.append((f"{'pruned ' if out.pruned else ''}{out.quant}", budget.binding(checks)))
    cand = ctx.state.candidates
    for o in _fallbacks(cand.options, out)[:MAX_FALLBACKS]:
        path = dense_file(ctx.run.path, o.recipe)
        lat, checks = measured(ctx, path, cand.base_structure, o.recipe)
        if all(c.ok for c in checks):
            Path(out.gguf).unlink(missing_ok=True)
            notes = tuple(f"{name}: {c.describe()}" for name, c in missed)
            fell = export_dense(ctx, f"{missed[0][0]} missed the budget as measured ({missed[0][1].describe()})",
                                o.recipe)
            return dataclasses.replace(fell, latency=lat, constraints=tuple(c.to_dict() for c in checks),
                                       fallbacks=notes, replaced_pruned=fell.replaced_pruned if out.pruned else None)
        missed.append((o.recipe.name, budget.binding(checks)))
    name, best = max(missed, key=lambda m: m[1].margin)
    raise LatencyError(f"no file this build made meets the budget as measured: the best reachable is {name}: "
                       f"{best.describe()}; relax the budget or raise --max-ratio")


def _fallbacks(options: Any, out: Exported) -> list[Any]:
    """Dense candidates with a written, scored file, lowest objective PPL first (never the file just shipped)."""
    scored = [o for o in options if o.ppl is not None and (out.pruned or o.recipe != out.quant)]
    return sorted(scored, key=lambda o: o.ppl)
