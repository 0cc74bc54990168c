"""The stages of `build` (see pipeline.py). Each takes the BuildContext and returns a JSON-safe dict."""

from __future__ import annotations

import gc

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaprune_edge.build import quant_stages as build_quant
from adaprune_edge.evaluate.runtime_ram import measure_runtime_ram
from adaprune_edge.errors import LatencyError


@dataclass
class BuildContext:
    """What stages share: the spec, the run dir, hooks, results so far, and lazily loaded objects."""

    spec: Any
    run: Any
    hooks: Any
    results: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def profile(self) -> Any:
        from adaprune_edge.profiles import load_profile

        return self._memo("profile", lambda: load_profile(self.spec.device))

    @property
    def quant(self) -> str:
        """The shipped quant recipe: the plan's choice once made, else --quant or the profile's."""
        from adaprune_edge.quant import QuantRecipe

        if "plan" in self.results:
            return self.results["plan"]["quant"]
        return QuantRecipe.parse(self.spec.quant or self.profile.quant).name

    @property
    def dense(self) -> Any:
        from adaprune_edge import models

        return self._memo("dense", lambda: models.load(self.spec.model))

    @property
    def settings(self) -> Any:
        from adaprune_edge.latency.backends import BenchSettings

        return BenchSettings.from_profile(self.profile)

    def _memo(self, key: str, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def search_spec(self) -> Any:
        plan = self.results["plan"]  # a quant-only plan has no bounds: its context serves only data
        return self.search_spec_for(self.quant, plan["bounds"] or {"r_min": 0.0, "r_max": 0.1},
                                    plan.get("latency_scale", 1.0))

    def search_spec_for(self, quant: str, bounds: dict[str, Any], latency_scale: float = 1.0) -> Any:
        """The search's spec at `quant` with ratio `bounds` (r_max defaults to just above r_min)."""
        from adaprune_edge.search.run import SearchSpec
        from adaprune_edge.search.space import SpaceBounds

        s = self.spec
        if "max_samples" not in bounds:
            bounds = SpaceBounds(r_min=bounds["r_min"], r_max=max(bounds["r_max"], bounds["r_min"] + 0.01),
                                 max_samples=s.max_samples, max_seq_len=s.max_seq_len).to_dict()
        return SearchSpec(model=s.model, profile=self.profile.to_dict(), quant=quant, bounds=bounds,
                          calib=s.calib, val=s.val, val_windows=s.val_windows, val_seq_len=s.val_seq_len,
                          report_windows=s.report_windows,
                          objective=s.objective, budget_ms=s.budget_ms, latency_scale=latency_scale,
                          measure_trials=False,  # screened by the calibrated roofline; the incumbent is measured
                          n_trials=s.trials, workers=s.workers,
                          seed=s.seed)

    def search_context(self) -> Any:
        from adaprune_edge.search.run import SearchContext

        step = lambda d, t, note: self.hooks.progress("calibration", d, t, note)  # noqa: E731
        return self._memo("search_ctx", lambda: SearchContext(self.search_spec(), self.dense, progress=step))

    def data_context(self) -> Any:
        """A search context before the plan exists: only its data (calibration pool, objective windows)."""
        from adaprune_edge.search.run import SearchContext

        if "plan" in self.results:
            return self.search_context()
        step = lambda d, t, note: self.hooks.progress("calibration", d, t, note)  # noqa: E731
        spec = self.search_spec_for(self.quant, {"r_min": 0.0, "r_max": 0.1})
        return self._memo("data_ctx", lambda: SearchContext(spec, self.dense, progress=step))

    def objective_windows(self) -> Any:
        """The search objective's token windows [n, seq_len] (disjoint from calibration and the report)."""
        return self.data_context().val

    def calibration_pool(self) -> Any:
        return self.data_context().pools[0]


def latency_of(ctx: BuildContext, structure: Any, gguf: Path | None = None, quant: str | None = None) -> Any:
    """Measured latency with the device's backend where it can measure (the real GGUF if given, else a
    shape-only one), otherwise the roofline prediction; at `quant` (default: the shipped recipe)."""
    from adaprune_edge.latency.roofline import predict
    from adaprune_edge.latency.shape import file_latency, structure_latency

    quant = quant or ctx.quant
    if ctx.profile.backend == "predict":
        return predict(structure, quant, ctx.profile)
    if gguf is not None:
        return file_latency(gguf, quant, ctx.settings, ctx.profile.name)
    return structure_latency(structure, quant, ctx.settings, ctx.profile.name)


# -- stages ------------------------------------------------------------------------------------------
def stage_plan(ctx: BuildContext) -> dict[str, Any]:
    """Quant-only vs prune (build_quant.stage_plan), plus the dense model's latency at the chosen recipe."""
    from adaprune_edge.structure import Structure

    out = build_quant.stage_plan(ctx)
    dense = latency_of(ctx, Structure.from_dict(out["base_structure"]), quant=out["quant"])
    return {**out, "dense_latency": dense.to_dict()}


def stage_candidates(ctx: BuildContext) -> dict[str, Any]:
    return build_quant.stage_candidates(ctx)


def stage_search(ctx: BuildContext) -> dict[str, Any]:
    """SMAC search in run/search (resumable trial by trial); skipped when quantization alone wins."""
    from adaprune_edge.search.evaluators import DaskEvaluator, LocalEvaluator
    from adaprune_edge.search.run import run_search

    if quant_only(ctx):
        return {"skipped": ctx.results["plan"]["reason"], "n_trials": 0, "feasible": 0,
                "data_sets": ctx.search_context().data_sets()}

    spec, folder = ctx.search_spec(), ctx.run.file("search")
    resume = (folder / "search.json").exists()
    data_sets = ctx.search_context().data_sets()  # also generates builtin:self once, before any dask worker
    if ctx.spec.workers > 1 or ctx.spec.scheduler:
        from adaprune_edge.search.cluster import dask_client

        with dask_client(ctx.spec.workers, ctx.spec.scheduler) as client:
            out = run_search(spec, folder, resume=resume, evaluator=DaskEvaluator(spec, client), on_trial=ctx.hooks.trial)
    else:
        ev = LocalEvaluator(spec, ctx.search_context())
        out = run_search(spec, folder, resume=resume, evaluator=ev, on_trial=ctx.hooks.trial)
    best, checked = confirmed_best(ctx, out.records)
    shutil.copyfile(folder / "trials.csv", ctx.run.file("trials.csv"))
    return {"best": best.to_dict(), "n_trials": len(out.records), "confirmations": checked, "data_sets": data_sets,
            "feasible": sum(r.feasible for r in out.records), "pareto": [r.index for r in out.pareto]}


def confirmed_best(ctx: BuildContext, records: list) -> tuple[Any, list[dict[str, Any]]]:
    """The lowest-cost trial whose structure also meets the budget when measured with the device's
    backend (trials are screened with the roofline; the incumbent is always re-measured)."""
    from adaprune_edge.latency import budget
    from adaprune_edge.structure import Structure

    checked = []
    for rec in sorted((r for r in records if r.feasible), key=lambda r: r.cost):
        st = Structure.from_dict(rec.structure)
        lat = latency_of(ctx, st)
        ok, why = budget.budget_ok(st, ctx.profile, ctx.quant, lat, ctx.spec.budget_ms)
        checked.append({"trial": rec.index, "decode_ms": lat.decode_ms_per_token, "measured": lat.measured, "ok": ok})
        if ok:
            return rec, checked
        if len(checked) >= 5:
            break
    raise LatencyError(f"none of {len(records)} trials met the budget when measured ({checked[-1] if checked else 'no feasible trial'}); "
                       "raise --trials or --max-ratio")


def stage_prune(ctx: BuildContext) -> dict[str, Any]:
    """Prune the full model with the best trial's recipe (same calibration windows) and save it."""
    from adaprune_edge.prune.engine import PruneConfig, prune
    from adaprune_edge.prune.slicing import save_pruned
    from adaprune_edge.search.space import to_prune_config

    if quant_only(ctx):
        return nothing_pruned(ctx)

    best = ctx.results["search"]["best"]
    cfg, weights = to_prune_config(best["values"], PruneConfig.from_dict(best["prune_config"]).align, ctx.spec.seed)
    sctx = ctx.search_context()
    res = prune(ctx.dense.model, sctx.calibration(cfg, weights), cfg, cache=sctx.cache,
                progress=lambda d, t: ctx.hooks.progress("prune", d, t, "calibration batches"))
    tmp, final = ctx.run.file(".pruned.tmp"), ctx.run.file("pruned")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pruned(res.model, ctx.dense.tokenizer, tmp, recipe={"config": cfg.to_dict(), "search_values": best["values"],
                                                              "source_model": ctx.spec.model})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    ctx._cache["pruned"] = res.model
    same = res.structure.to_dict() == best["structure"]
    return {**res.to_dict(), "matches_search_trial": same}


def quant_only(ctx: BuildContext) -> bool:
    """True when the shipped model is the dense one (the plan said so, or export replaced the pruned file)."""
    ex = ctx.results.get("export")
    return ctx.results["plan"]["mode"] == "quant-only" or (ex is not None and not ex.get("pruned", True))


def nothing_pruned(ctx: BuildContext) -> dict[str, Any]:
    """stage_prune's result when the plan ships the dense model (same keys as a PruneResult)."""
    p = ctx.results["plan"]
    return {"skipped": p["reason"], "params_before": p["dense_params"], "params_after": p["dense_params"],
            "decoder_params_after": p["dense_decoder_params"], "decoder_ratio": 0.0, "total_ratio": 0.0,
            "structure": p["base_structure"], "config": None}


def _pruned_model(ctx: BuildContext) -> Any:
    from adaprune_edge.prune.slicing import load_pruned

    if quant_only(ctx):
        return ctx.dense.model
    return ctx._memo("pruned", lambda: load_pruned(ctx.run.file("pruned"))[0])


def stage_export(ctx: BuildContext) -> dict[str, Any]:
    """F16 GGUF (llama or deci) → llama.cpp quantization with the plan's recipe and an importance matrix
    of the shipped model → Ollama Modelfile. A pruned file that the best quant-only file beats on the
    objective windows is not shipped: the quant-only file is (never worse than plain quantization)."""
    from adaprune_edge.exporters import modelfile, vocab
    from adaprune_edge.runs import write_text

    meta = vocab.for_model(ctx.dense, ctx.dense.info.vocab)
    out = _export_dense(ctx) if quant_only(ctx) else _export_pruned(ctx, meta)
    write_text(ctx.run.file("Modelfile"), modelfile.render(Path(out["gguf"]), meta.chat_template))
    return out


def shipped_name(recipe: str) -> str:
    """model-Q4_K_M.gguf, model-Q4_K_M_fb-IQ4_NL.gguf (whether an imatrix was used is in report.json)."""
    from adaprune_edge.quant import file_label

    return f"model-{file_label(recipe.replace(':imatrix', ''))}.gguf"


def _export_dense(ctx: BuildContext, why: str | None = None) -> dict[str, Any]:
    """Ship the dense model quantized with the plan's quant-only recipe (already written by `candidates`)."""
    from adaprune_edge.exporters import quantize
    from adaprune_edge.build.quant_options import best_quant_only, dense_file, QuantOption
    from adaprune_edge.structure import Structure

    cand = ctx.results["candidates"]
    recipe = ctx.quant if why is None else best_quant_only([QuantOption.from_dict(d) for d in cand["options"]]).recipe
    st = Structure.from_dict(cand["base_structure"])
    f16, qpath = ctx.run.file("model-F16.gguf"), ctx.run.file(shipped_name(recipe))
    shutil.copyfile(cand["dense_f16"], f16)
    shutil.copyfile(dense_file(ctx.run.path, recipe), qpath)
    return {"arch": "llama", "f16": str(f16), "f16_bytes": f16.stat().st_size, "gguf": str(qpath),
            "quant": recipe, "pruned": False, "replaced_pruned": why,
            "quant_report": quantize.report(qpath, st, recipe).to_dict(), "structure": st.to_dict()}


def _export_pruned(ctx: BuildContext, meta: Any) -> dict[str, Any]:
    from adaprune_edge.exporters import gguf, quantize
    from adaprune_edge.build.quant_options import QuantOption, best_quant_only, gguf_ppl
    from adaprune_edge.structure import Structure

    model = _pruned_model(ctx)
    st = Structure.from_model(model)
    f16, qpath = ctx.run.file("model-F16.gguf"), ctx.run.file(shipped_name(ctx.quant))
    name = f"{Path(ctx.spec.model).stem}-adaprune-{ctx.profile.name}"
    res = gguf.write_model(model, f16, meta, quant="F16", name=name, source_model=ctx.spec.model,
                           recipe=ctx.results["prune"]["config"],
                           progress=lambda n, d, t: ctx.hooks.progress("export", d, t, n))
    im = build_quant.collect_imatrix(ctx, model) if ":imatrix" in ctx.quant else None
    threads = ctx.profile.threads if ctx.profile.backend == "local" else None
    quantize.quantize(f16, qpath, ctx.quant, threads=threads, imatrix=im)
    # the guarantee: measured on the objective windows, plain quantization must not win
    ppl = gguf_ppl(qpath, ctx.objective_windows().numpy())
    best = best_quant_only([QuantOption.from_dict(d) for d in ctx.results["candidates"]["options"]])
    if best is not None and ppl > best.ppl:
        qpath.unlink()
        return _export_dense(ctx, f"the pruned {ctx.quant} file (objective PPL {ppl:.2f}) lost to "
                                  f"quantization alone ({best.recipe}, {best.ppl:.2f})")
    return {"arch": res.arch, "f16": str(f16), "f16_bytes": f16.stat().st_size, "gguf": str(qpath),
            "quant": ctx.quant, "pruned": True, "objective_ppl": ppl, "replaced_pruned": None,
            "quant_report": quantize.report(qpath, st, ctx.quant).to_dict(), "structure": st.to_dict()}


def report_windows(ctx: BuildContext) -> Any:
    """The report set: held-out windows after the objective's, never seen by calibration or the search."""
    return ctx.data_context().report_windows


def stage_validate(ctx: BuildContext) -> dict[str, Any]:
    """Parity gate (F16 GGUF vs torch), quantized PPL/KL vs dense, generation, latency, RAM, zero-shot."""
    from adaprune_edge.latency import budget
    from adaprune_edge.evaluate import validation
    from adaprune_edge.structure import Structure

    ex = ctx.results["export"]
    st, recipe = Structure.from_dict(ex["structure"]), ex["quant"]
    # latency first, while the process is idle (a loaded Llama left from the PPL pass would hold RAM and
    # threads during the measurement)
    gc.collect()
    lat = latency_of(ctx, st, Path(ex["gguf"]), quant=recipe)
    windows = report_windows(ctx).numpy()
    step = lambda n: ctx.hooks.progress("validate", n, 0, "windows")  # noqa: E731
    f16 = validation.validate(ex["f16"], windows, torch_model=_pruned_model(ctx), threads=ctx.profile.threads
                              if ctx.profile.backend == "local" else 2, progress=step)
    q = validation.validate(ex["gguf"], windows, torch_model=ctx.dense.model, tokenizer=ctx.dense.tokenizer,
                            threads=2, progress=step)
    ok, why = budget.budget_ok(st, ctx.profile, recipe, lat, ctx.spec.budget_ms)
    ram = measure_runtime_ram(ex["gguf"], n_ctx=ctx.profile.context_length, threads=2,
                              predicted_bytes=budget.ram_bytes(st, recipe, ctx.profile.context_length))
    return {"runtime_ram": ram.to_dict(), "f16": f16.to_dict(), "quant": q.to_dict(), "latency": lat.to_dict(), "budget_met": ok,
            "budget_reason": why, "ram_bytes": budget.ram_bytes(st, recipe, ctx.profile.context_length),
            "quant_only": quant_only_row(ctx, windows, q.to_dict(), lat.to_dict()),
            "zero_shot": zero_shot(ctx, ex["gguf"]), "general_text": general_text(ctx, ex["gguf"])}


def quant_only_row(ctx: BuildContext, windows: Any, shipped_q: dict[str, Any], shipped_lat: dict[str, Any]) -> dict[str, Any]:
    """The best dense quantized file that meets the budget, scored like the shipped one (report windows,
    KL vs the dense torch model), so the report shows what pruning bought. {} when no recipe meets it."""
    from adaprune_edge.evaluate import validation
    from adaprune_edge.build.quant_options import QuantOption, best_quant_only, dense_file
    from adaprune_edge.structure import Structure

    cand = ctx.results["candidates"]
    best = best_quant_only([QuantOption.from_dict(d) for d in cand["options"]])
    if best is None:
        return {}
    base = Structure.from_dict(cand["base_structure"])
    path = dense_file(ctx.run.path, best.recipe)
    if quant_only(ctx):
        q, lat = shipped_q, shipped_lat
    else:
        q = validation.validate(path, windows, torch_model=ctx.dense.model, threads=2).to_dict()
        lat = latency_of(ctx, base, path, quant=best.recipe).to_dict()
    return {"recipe": best.recipe, "file_bytes": path.stat().st_size, "decode_ms_per_token": lat["decode_ms_per_token"],
            "measured": lat.get("measured", False), "ppl": q["ppl"], "kl_vs_dense": q["kl_mean"], "top1": q["top1"],
            "objective_ppl": best.ppl}


def zero_shot(ctx: BuildContext, gguf_path: str) -> dict[str, Any]:
    """Accuracy of the dense torch model and of the shipped GGUF on the local tasks (seeded subset)."""
    from adaprune_edge.evaluate import harness
    from adaprune_edge.evaluate import tasks
    from adaprune_edge.errors import DataError

    if ctx.spec.data_dir is None or not ctx.spec.tasks or ctx.spec.eval_limit <= 0:
        return {}
    out: dict[str, Any] = {}
    scorer = harness.GGUFScorer.open(gguf_path, n_ctx=1024, threads=2)
    dense = harness.TorchScorer(ctx.dense.model, ctx.dense.tokenizer)
    try:
        for name in ctx.spec.tasks:
            try:
                data = tasks.load(name, ctx.spec.data_dir)
            except DataError as e:
                out[name] = {"skipped": str(e)}
                continue
            step = lambda n, name=name: ctx.hooks.progress("zero-shot", n, 0, name)  # noqa: E731
            out[name] = {"dense": harness.evaluate_task(dense, data, ctx.spec.eval_limit, progress=step).to_dict(),
                         "pruned": harness.evaluate_task(scorer, data, ctx.spec.eval_limit, progress=step).to_dict()}
    finally:
        scorer.llm.close()
    return out


def general_text(ctx: BuildContext, gguf_path: str) -> dict[str, Any]:
    """wikitext-2 / PTB valid perplexity, dense vs shipped, when --data-dir is given (general_text.py)."""
    from adaprune_edge.evaluate import general_text as gt

    if ctx.spec.data_dir is None:
        return {}
    sources = [src for src, _ in ctx.search_context().split.calib]
    step = lambda n: ctx.hooks.progress("general text", n, 0, "windows")  # noqa: E731
    return gt.evaluate(gguf_path, ctx.dense.model, ctx.dense.tokenizer, ctx.spec.data_dir, sources,
                       ctx.spec.report_windows, ctx.spec.val_seq_len, progress=step)


def stage_report(ctx: BuildContext) -> dict[str, Any]:
    """report.json, report.md and tradeoff.png from the other stages' results."""
    from adaprune_edge.build import report

    rep = report.build_report(ctx.results, ctx.spec)
    report.write_all(rep, ctx.run.path, ctx.results)
    return {"report": rep}
