"""The stages of `build` (see pipeline.py). Each takes the BuildContext and returns a JSON-safe dict."""

from __future__ import annotations

import gc

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        from adaprune_edge.structure import _quant_pair

        q = self.spec.quant or self.profile.quant
        _quant_pair(q)
        return q

    @property
    def dense(self) -> Any:
        from adaprune_edge import models

        return self._memo("dense", lambda: models.load(self.spec.model))

    @property
    def settings(self) -> Any:
        from adaprune_edge.latency import BenchSettings

        return BenchSettings.from_profile(self.profile)

    def _memo(self, key: str, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def search_spec(self) -> Any:
        from adaprune_edge.search import SearchSpec

        s, plan = self.spec, self.results["plan"]
        return SearchSpec(model=s.model, profile=self.profile.to_dict(), quant=self.quant, bounds=plan["bounds"],
                          calib=s.calib, val=s.val, val_windows=s.val_windows, val_seq_len=s.val_seq_len,
                          objective=s.objective, budget_ms=s.budget_ms, latency_scale=plan.get("latency_scale", 1.0),
                          measure_trials=False,  # screened by the calibrated roofline; the incumbent is measured
                          n_trials=s.trials, workers=s.workers,
                          seed=s.seed)

    def search_context(self) -> Any:
        from adaprune_edge.search import SearchContext

        return self._memo("search_ctx", lambda: SearchContext(self.search_spec(), self.dense))


def latency_of(ctx: BuildContext, structure: Any, gguf: Path | None = None) -> Any:
    """Measured latency with the device's backend where it can measure (the real GGUF if given, else a
    shape-only one), otherwise the roofline prediction."""
    from adaprune_edge.roofline import predict
    from adaprune_edge.shape_latency import file_latency, structure_latency

    if ctx.profile.backend == "predict":
        return predict(structure, ctx.quant, ctx.profile)
    if gguf is not None:
        return file_latency(gguf, ctx.quant, ctx.settings, ctx.profile.name)
    return structure_latency(structure, ctx.quant, ctx.settings, ctx.profile.name)


# -- stages ------------------------------------------------------------------------------------------
def stage_plan(ctx: BuildContext) -> dict[str, Any]:
    """Budget → smallest ratio that meets it (r_min) → search bounds; dense latency on the device."""
    from adaprune_edge.plan import make_plan
    from adaprune_edge.structure import Structure

    base = Structure.from_model(ctx.dense.model)
    plan = make_plan(base, ctx.profile, ctx.quant, ctx.spec.budget_ms, ctx.spec.max_ratio,
                     max_samples=ctx.spec.max_samples, max_seq_len=ctx.spec.max_seq_len)
    dense = latency_of(ctx, base)
    return {**plan.to_dict(), "profile": ctx.profile.to_dict(), "base_structure": base.to_dict(),
            "dense_latency": dense.to_dict(), "dense_params": base.params(),
            "dense_decoder_params": base.decoder_params(), "model_info": ctx.dense.info.to_dict()}


def stage_search(ctx: BuildContext) -> dict[str, Any]:
    """SMAC search in run/search (resumable trial by trial)."""
    from adaprune_edge.evaluators import DaskEvaluator, LocalEvaluator
    from adaprune_edge.search import run_search

    spec, folder = ctx.search_spec(), ctx.run.file("search")
    resume = (folder / "search.json").exists()
    if ctx.spec.workers > 1 or ctx.spec.scheduler:
        from adaprune_edge.cluster import dask_client

        with dask_client(ctx.spec.workers, ctx.spec.scheduler) as client:
            out = run_search(spec, folder, resume=resume, evaluator=DaskEvaluator(spec, client), on_trial=ctx.hooks.trial)
    else:
        ev = LocalEvaluator(spec, ctx.search_context())
        out = run_search(spec, folder, resume=resume, evaluator=ev, on_trial=ctx.hooks.trial)
    best, checked = confirmed_best(ctx, out.records)
    shutil.copyfile(folder / "trials.csv", ctx.run.file("trials.csv"))
    return {"best": best.to_dict(), "n_trials": len(out.records), "confirmations": checked,
            "feasible": sum(r.feasible for r in out.records), "pareto": [r.index for r in out.pareto]}


def confirmed_best(ctx: BuildContext, records: list) -> tuple[Any, list[dict[str, Any]]]:
    """The lowest-cost trial whose structure also meets the budget when measured with the device's
    backend (trials are screened with the roofline; the incumbent is always re-measured)."""
    from adaprune_edge import budget
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
    from adaprune_edge.pruner import PruneConfig, prune
    from adaprune_edge.pruning import save_pruned
    from adaprune_edge.searchspace import to_prune_config

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


def _pruned_model(ctx: BuildContext) -> Any:
    from adaprune_edge.pruning import load_pruned

    return ctx._memo("pruned", lambda: load_pruned(ctx.run.file("pruned"))[0])


def stage_export(ctx: BuildContext) -> dict[str, Any]:
    """F16 GGUF (llama or deci) → llama.cpp quantization → Ollama Modelfile."""
    from adaprune_edge.exporters import gguf, modelfile, quantize, vocab
    from adaprune_edge.runs import write_text
    from adaprune_edge.structure import Structure

    model = _pruned_model(ctx)
    st = Structure.from_model(model)
    meta = vocab.for_model(ctx.dense, st.vocab)
    f16, qpath = ctx.run.file("model-F16.gguf"), ctx.run.file(f"model-{ctx.quant}.gguf")
    name = f"{Path(ctx.spec.model).stem}-adaprune-{ctx.profile.name}"
    res = gguf.write_model(model, f16, meta, quant="F16", name=name, source_model=ctx.spec.model,
                           recipe=ctx.results["prune"]["config"],
                           progress=lambda n, d, t: ctx.hooks.progress("export", d, t, n))
    if ctx.quant not in ("F16", "F32"):
        quantize.quantize(f16, qpath, ctx.quant, threads=ctx.profile.threads if ctx.profile.backend == "local" else None)
    rep = quantize.report(qpath, st, ctx.quant)
    write_text(ctx.run.file("Modelfile"), modelfile.render(qpath, meta.chat_template))
    return {"arch": res.arch, "f16": str(f16), "f16_bytes": f16.stat().st_size, "gguf": str(qpath),
            "quant_report": rep.to_dict(), "structure": st.to_dict()}


def report_windows(ctx: BuildContext) -> Any:
    """Held-out windows for the final report: the validation source, never the calibration part."""
    from adaprune_edge.calibration import BUILTIN_DEFAULT, CalibrationPool

    s, tok = ctx.spec, ctx.dense.tokenizer
    if s.val is not None:
        return CalibrationPool.from_sources([s.val], tok, s.val_seq_len).windows[: s.report_windows]
    first = (list(s.calib) or [BUILTIN_DEFAULT])[0]
    return CalibrationPool.from_sources([first], tok, s.val_seq_len, (0.8, 1.0)).windows[: s.report_windows]


def stage_validate(ctx: BuildContext) -> dict[str, Any]:
    """Parity gate (F16 GGUF vs torch), quantized PPL/KL vs dense, generation, latency, RAM, zero-shot."""
    from adaprune_edge import budget, validation
    from adaprune_edge.structure import Structure

    ex = ctx.results["export"]
    st = Structure.from_dict(ex["structure"])
    # latency first, while the process is idle (a loaded Llama left from the PPL pass would hold RAM and
    # threads during the measurement)
    gc.collect()
    lat = latency_of(ctx, st, Path(ex["gguf"]))
    windows = report_windows(ctx).numpy()
    step = lambda n: ctx.hooks.progress("validate", n, 0, "windows")  # noqa: E731
    f16 = validation.validate(ex["f16"], windows, torch_model=_pruned_model(ctx), threads=ctx.profile.threads
                              if ctx.profile.backend == "local" else 2, progress=step)
    q = validation.validate(ex["gguf"], windows, torch_model=ctx.dense.model, tokenizer=ctx.dense.tokenizer,
                            threads=2, progress=step)
    ok, why = budget.budget_ok(st, ctx.profile, ctx.quant, lat, ctx.spec.budget_ms)
    return {"f16": f16.to_dict(), "quant": q.to_dict(), "latency": lat.to_dict(), "budget_met": ok,
            "budget_reason": why, "ram_bytes": budget.ram_bytes(st, ctx.quant, ctx.profile.context_length),
            "zero_shot": zero_shot(ctx, ex["gguf"])}


def zero_shot(ctx: BuildContext, gguf_path: str) -> dict[str, Any]:
    """Accuracy of the dense torch model and of the shipped GGUF on the local tasks (seeded subset)."""
    from adaprune_edge import harness, tasks
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


def stage_report(ctx: BuildContext) -> dict[str, Any]:
    """report.json, report.md and tradeoff.png from the other stages' results."""
    from adaprune_edge import report

    rep = report.build_report(ctx.results, ctx.spec)
    report.write_all(rep, ctx.run.path, ctx.results)
    return {"report": rep}
