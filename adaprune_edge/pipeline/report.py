"""The build report: one JSON-safe dict (dense vs pruned), rendered as markdown and a trade-off plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaprune_edge.evaluate.validation import peak_rss_bytes
from adaprune_edge.bitalloc import recipe_file
from adaprune_edge.pipeline import plots
from adaprune_edge.pipeline.prune_stages import nothing_pruned
from adaprune_edge.pipeline.results import Recovered, Reported
from adaprune_edge.pipeline.state import BuildState
from adaprune_edge.data.textsets import TextSet
from adaprune_edge.latency import budget
from adaprune_edge.runtime import kvcache
from adaprune_edge.runs import write_json, write_text
from adaprune_edge.search.trials import TrialStore


def _retention(pruned: float | None, dense: float | None, lower_is_better: bool = False) -> float | None:
    if pruned is None or dense in (None, 0):
        return None
    return 100.0 * (dense / pruned if lower_is_better else pruned / dense)


def build_report(state: BuildState, spec: Any) -> dict[str, Any]:
    """Dense vs shipped on everything the stages measured (units in the key names), from the typed results of
    every stage before the report."""
    plan, val, ex, pr, search = state.plan, state.validate, state.export, state.prune, state.search
    q, lat, dense_lat = val.quant, val.latency, plan.dense_latency
    if not ex.pruned:  # the dense model ships: nothing of the prune stage applies
        pr = nothing_pruned(plan)
    rows = {
        "params": (plan.dense_params, pr.params_after),
        "decoder_params": (plan.dense_decoder_params, pr.decoder_params_after),
        "file_bytes": (plan.base_structure.gguf_bytes(ex.quant), ex.quant_report.file_bytes),
        "decode_ms_per_token": (dense_lat.decode_ms_per_token, lat.decode_ms_per_token),
        "prefill_tps": (dense_lat.prefill_tps, lat.prefill_tps),
        "ppl": (q.reference_ppl, q.ppl),
    }
    acc = {t: (r.dense.acc, r.pruned.acc) for t, r in val.zero_shot.items() if r.dense is not None}
    checks = budget.constraints(lat, val.ram_bytes, plan.profile, spec.budget_ms)
    return {
        "device": plan.device, "quant": ex.quant.name, "model": spec.model, "budget_ms_per_token": plan.budget_ms,
        "allocation": recipe_file.to_dict(ex.quant) if ex.quant.assign else None,
        "latency_source": "measured" if lat.measured else "predicted",
        "latency_backend": lat.backend, "budget_met": val.budget_met, "budget_reason": val.budget_reason,
        "budget": {**plan.profile.budget.to_dict(), "context_length": plan.profile.context_length,
                   "ram_limit_mib": round(plan.profile.usable_ram_bytes / 2**20, 1)},
        "constraints": [c.to_dict() for c in checks], "binding": budget.binding(checks).to_dict(),
        "fallbacks": list(ex.fallbacks),
        "kv_cache": {"type": plan.profile.kv_cache_type, "apply": kvcache.how_to_apply(plan.profile.kv_cache_type)},
        "r_min": plan.r_min, "decoder_ratio": pr.decoder_ratio, "total_ratio": pr.total_ratio,
        "structure": ex.structure.to_dict(), "arch": ex.arch, "gguf": ex.gguf,
        "recipe": search.best.values if ex.pruned and search.best else None,
        "mode": "pruned" if ex.pruned else "quant-only",
        "decision": _decision(ex, plan), "quant_only": val.quant_only.to_dict() if val.quant_only else {},
        "quant_options": [o.to_dict() for o in state.candidates.options],
        "trials": search.n_trials, "feasible_trials": search.feasible,
        "rescored_trials": [r.to_dict() for r in search.rescored], "search_cost": dict(search.cost),
        "dense": {k: v[0] for k, v in rows.items()}, "pruned": {k: v[1] for k, v in rows.items()},
        "kl_vs_dense": q.kl_mean, "top1_vs_dense": q.top1,
        "accuracy": {t: {"dense": d, "pruned": p, "retention_pct": _retention(p, d)} for t, (d, p) in acc.items()},
        "ppl_retention_pct": _retention(q.ppl, q.reference_ppl, lower_is_better=True),
        "parity_gate": {"f16_gguf_ppl": val.f16.ppl, "torch_ppl": val.f16.torch_ppl,
                        "rel_diff": val.f16.ppl_rel_diff_vs_torch, "passed": val.f16.passed},
        "generation": q.generation, "ram_bytes": val.ram_bytes,
        "runtime_ram": val.runtime_ram.to_dict() if val.runtime_ram else {},
        "build_peak_rss_bytes": _build_peak_rss(state), "stage_peak_rss_bytes": _stage_peaks(state),
        "eval_windows": q.windows, "eval_seq_len": q.seq_len,
        "data_sets": _data_sets(search.data_sets, state.recover),
        "general_text": {k: g.to_dict() for k, g in val.general_text.items()},
        "recovery": _recovery(state.recover, ex.pruned),
        "stage_seconds": {k: v.seconds for k, v in state.finished().items()},
    }


def _decision(ex: Any, plan: Any) -> str:
    """The plan's reason, or why export shipped another file (lost on quality, or missed the budget as measured)."""
    if ex.replaced_pruned:
        return ex.replaced_pruned
    if ex.fallbacks:
        return f"{plan.reason}; that file missed the budget as measured, so {ex.quant} ships ({'; '.join(ex.fallbacks)})"
    return plan.reason


def _data_sets(sets: dict[str, TextSet], rec: Recovered | None) -> dict[str, Any]:
    """The search's disjoint sets plus the recovery text when recovery ran."""
    out = {k: s.to_dict() for k, s in sets.items()}
    return {**out, "recovery": rec.text.to_dict()} if rec is not None and rec.text else out


def _recovery(rec: Recovered | None, pruned: bool) -> dict[str, Any] | None:
    """What recovery did and bought: report-set torch PPL before/after, tokens, minutes, the plan's estimate."""
    if rec is None or (rec.skipped and not pruned):
        return None
    if rec.skipped:
        return {"skipped": rec.skipped}
    r = rec.result
    return {"shipped": pruned, "report_ppl_before": rec.report_ppl_before, "report_ppl_after": rec.report_ppl_after,
            "report_ppl_dense": rec.report_ppl_dense, "closure_measured": rec.closure_measured,
            "closure_predicted": rec.estimate.closure if rec.estimate else None,
            "tokens": r.tokens, "epochs": r.epochs, "minutes": round(r.seconds / 60, 2),
            "tokens_per_s": r.tokens_per_s, "device": r.device, "bf16": r.bf16, "train": r.config["train"],
            "kl_first": r.kl_first, "kl_last": r.kl_last, "stopped": r.stopped, "text": rec.text.source,
            "estimate": rec.estimate.to_dict() if rec.estimate else None}


def _stage_peaks(state: BuildState) -> dict[str, int]:
    """Per finished stage, the peak RSS of the process that ran it, at the stage's end (0: not recorded)."""
    return {k: v.peak_rss_bytes for k, v in state.finished().items()}


def _build_peak_rss(state: BuildState) -> int:
    """Peak RSS of the build (torch, calibration, search; not the shipped model): the largest of every stage's
    process peak and this process's, so a build resumed in another process reports its true peak."""
    return max([peak_rss_bytes(), *_stage_peaks(state).values()])


def candidate_rows(rep: dict[str, Any]) -> list[tuple[str, ...]]:
    """(recipe, uniform/allocated, MB, decode ms, meets, PPL, KL) of every scored dense candidate, best PPL first."""
    scored = sorted((o for o in rep.get("quant_options", []) if o.get("ppl")), key=lambda o: o["ppl"])
    return [(o["recipe"], "allocated" if ":alloc=" in o["recipe"] else "uniform", f"{o['file_bytes'] / 1e6:.1f}",
             f"{o['decode_ms']:.2f}", "yes" if o["r_min"] == 0.0 else "no (needs pruning)", f"{o['ppl']:.2f}",
             "" if o.get("kl") is None else f"{o['kl']:.4f}") for o in scored]


def summary_rows(rep: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(metric, dense, quantize only, shipped, note) rows for the final table. "dense": the unpruned model
    (torch for quality; the shipped recipe for size and speed); "quantize only": the best dense quantized
    file that meets the budget (blank when none does)."""
    d, p, qo = rep["dense"], rep["pruned"], rep.get("quant_only") or {}
    src = rep["latency_source"]
    q = lambda key, fmt: format(qo[key], fmt) if key in qo and qo[key] is not None else ""  # noqa: E731
    rows = [
        ("recipe", "F16 (torch)", qo.get("recipe", "none meets the budget"), rep["quant"],
         "shipped: dense (quantization alone)" if rep["mode"] == "quant-only" else "shipped: pruned + quantized"),
        ("parameters", f"{d['params'] / 1e6:.1f}M", f"{d['params'] / 1e6:.1f}M" if qo else "", f"{p['params'] / 1e6:.1f}M",
         f"-{rep['total_ratio']:.1%} of all, -{rep['decoder_ratio']:.1%} of decoder"),
        ("GGUF size", f"{d['file_bytes'] / 1e6:.1f} MB (tensors)", f"{qo['file_bytes'] / 1e6:.1f} MB" if qo else "",
         f"{p['file_bytes'] / 1e6:.1f} MB", rep["arch"]),
        ("decode ms/token", f"{d['decode_ms_per_token']:.2f}", q("decode_ms_per_token", ".2f"), f"{p['decode_ms_per_token']:.2f}",
         f"{src} ({rep['latency_backend']}); budget {rep['budget_ms_per_token']} → "
         + ("[green]met[/]" if rep["budget_met"] else "[red]NOT met[/]")),
        ("prefill tok/s", f"{d['prefill_tps']:.0f}", "", f"{p['prefill_tps']:.0f}", src),
        ("perplexity (report set)", f"{d['ppl']:.2f}", q("ppl", ".2f"), f"{p['ppl']:.2f}",
         f"retention {rep['ppl_retention_pct']:.1f}%; {rep['eval_windows']}x{rep['eval_seq_len']} tokens{_report_set(rep)}"),
        ("KL vs dense (nats/token)", "0", q("kl_vs_dense", ".3f"), f"{rep['kl_vs_dense']:.3f}",
         f"top-1 agreement {rep['top1_vs_dense']:.1%}"),
    ]
    if rep.get("binding"):
        b = rep["binding"]
        rows.append(("binding limit", "", "", b["name"], f"{b['value']:.4g} {b['unit']} against {b['limit']:.4g} "
                     f"({abs(b['margin']):.1%} {'headroom' if b['ok'] else 'MISSED'}; {src}); "
                     f"{len(rep['constraints'])} limits checked"))
    kv = rep.get("kv_cache") or {}
    if kv.get("type") not in (None, "F16"):
        rows.append(("K/V cache", "F16", "", kv["type"], "a runtime setting: " + kv["apply"]["llama.cpp"]
                     + "; see report.json kv_cache.apply for llama-cpp-python and Ollama"))
    rec = rep.get("recovery") or {}
    if rec.get("skipped"):
        rows.append(("recovery", "", "", "none", rec["skipped"]))
    elif rec:
        rows.append(("recovery (torch PPL, report set)", "", "", f"{rec['report_ppl_before']:.2f} → {rec['report_ppl_after']:.2f}"
                     + ("" if rec.get("shipped", True) else " (not shipped)"),
                     f"{rec['tokens']} tokens ({rec['epochs']:.1f} epochs) of {rec['text']} in {rec['minutes']:.1f} min "
                     f"({rec['tokens_per_s']:.0f} tok/s, {rec['device']}); KL {rec['kl_first']:.3f} → {rec['kl_last']:.3f}; "
                     f"closed {rec['closure_measured']:.0%} of the log-PPL gap to dense"
                     + (f" (plan predicted {rec['closure_predicted']:.0%})" if rec.get("closure_predicted") is not None else "")))
    for name, g in rep.get("general_text", {}).items():
        if "pruned_ppl" in g:
            rows.append((f"{name} PPL", f"{g['dense_ppl']:.2f}", "", f"{g['pruned_ppl']:.2f}",
                         f"{g['windows']}x{g['seq_len']} tokens of {g['source']}; never calibrated on"))
    for task, a in rep["accuracy"].items():
        rows.append((f"{task} acc", f"{a['dense']:.3f}", "", f"{a['pruned']:.3f}", f"retention {a['retention_pct']:.1f}%"))
    ram = rep.get("runtime_ram") or {}
    if ram:
        own = ram["rss_bytes"] - ram["baseline_rss_bytes"]
        rows.append(("runtime RAM", "", "", f"{own / 2**20:.0f} MiB",
                     f"llama.cpp's RSS with n_ctx {ram['n_ctx']} filled, without the Python interpreter "
                     f"({ram['baseline_rss_bytes'] / 2**20:.0f} MiB); predicted {ram['predicted_bytes'] / 2**20:.0f} MiB "
                     f"({own / ram['predicted_bytes'] - 1:+.0%}); build peak {rep['build_peak_rss_bytes'] / 2**30:.1f} GiB"))
    g = rep["parity_gate"]
    rows.append(("F16 GGUF PPL vs torch", f"{g['torch_ppl']:.3f} (torch)", "", f"{g['f16_gguf_ppl']:.3f} (F16 GGUF)",
                 f"{g['rel_diff']:+.2%} → " + ("[green]pass[/]" if g["passed"] else "[red]FAIL[/]")))
    return rows


def _report_set(rep: dict[str, Any]) -> str:
    r = rep.get("data_sets", {}).get("report")
    return f" of {r['source']} ({r['part']}), unseen by calibration and search" if r else ""


def data_set_lines(rep: dict[str, Any]) -> list[str]:
    """One line per disjoint set: name, source, part, tokens."""
    return [f"- {k}: {v['source']} ({v['part']}), {v['windows']}x{v['seq_len']} = {v['tokens']} tokens"
            for k, v in rep.get("data_sets", {}).items()]


def markdown(rep: dict[str, Any]) -> str:
    lines = [f"# adaprune-edge build: {rep['model']} on {rep['device']} ({rep['quant']})", "",
             f"Decision: {rep.get('decision')}", "",
             f"Pruning recipe: `{json.dumps(rep['recipe'], sort_keys=True)}`" if rep["recipe"] else "Pruning: none", "",
             f"Structure ({rep['arch']}): " + ", ".join(f"{s['n_head']}h/{s['n_head_kv']}kv/{s['n_ff']}ff"
                                                        for s in rep["structure"]["layers"]), "",
             "| metric | dense | quantize only | shipped | note |", "|---|---|---|---|---|"]
    for m, d, qo, p, n in summary_rows(rep):
        clean = n.replace("[green]", "").replace("[red]", "").replace("[/]", "")
        lines.append(f"| {m} | {d} | {qo} | {p} | {clean} |")
    rows = candidate_rows(rep)
    if rows:
        lines += ["", "Dense candidates scored on the objective windows (llama.cpp; KL to the dense torch model):", "",
                  "| recipe | kind | MB | decode ms/token | meets the budget | PPL | KL |", "|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    if rep.get("data_sets"):
        lines += ["", "Disjoint text sets (quality figures above use the report set and --data-dir files):"]
        lines += data_set_lines(rep)
    if rep.get("search_cost"):
        lines += ["", search_cost_line(rep["search_cost"])]
    lines += ["", f"Generation (greedy): {rep['generation']!r}", "",
              f"Trials: {rep['trials']} ({rep['feasible_trials']} within budget); stage seconds: {rep['stage_seconds']}", ""]
    return "\n".join(lines)


def search_cost_line(c: dict[str, Any]) -> str:
    """What the search cost and what it bought, in one line."""
    line = f"Search: {c['trials']} trials in {c['seconds']:.0f} s (stopped: {c['stopped']}; {c['raced_out']} raced out)"
    if c.get("chosen_minus_best_warm") is not None:
        line += (f"; chosen {c['chosen']['recipe']} at cost {c['chosen']['cost']:.4f} vs the best warm start "
                 f"{c['best_warm_start']['recipe']} at {c['best_warm_start']['cost']:.4f} "
                 f"({c['chosen_minus_best_warm']:+.4f} nats/token)")
    if c.get("shipped"):
        sh = c["shipped"]
        line += (f"; shipped trial #{sh['index']} ({sh['recipe']}, cost {sh['cost']:.4f}): trials "
                 + ", ".join(f"#{i}" for i in sh["missed_when_measured"]) + " missed the budget when measured")
    return line


def tradeoff_from_trials(path: Path, state: BuildState, rep: dict[str, Any]) -> Path:
    """Every feasible trial and dense quant recipe (latency vs perplexity on the objective windows, each recipe
    labelled), the dense F16 model and the shipped file, the budget line and the Pareto front."""
    folder = Path(path).parent / "search"
    recs = [r for r in TrialStore(folder).records() if r.feasible] if folder.is_dir() else []
    series = [{"label": "search trials within budget (predicted ms, torch PPL)", "ms": [r.decode_ms for r in recs],
               "quality": [r.ppl for r in recs], "style": "o", "names": [f"#{r.index}" for r in recs]}] if recs else []
    opts = [o for o in rep.get("quant_options", []) if o.get("ppl")]
    if opts:  # dense quant recipes: llama.cpp PPL on the objective windows
        ms_of = "measured" if all(o.get("measured") for o in opts) else "predicted"
        series.append({"label": f"dense quant recipes ({ms_of} ms, llama.cpp PPL)", "ms": [o["decode_ms"] for o in opts],
                       "quality": [o["ppl"] for o in opts], "style": "s", "names": [_short(o["recipe"]) for o in opts]})
    best = state.search.best
    what = f"best trial ratio {best.prune_config['ratio']:.2f}" if best and rep["mode"] == "pruned" else "quantization only"
    # every point on the objective windows (the report set is not plotted: it must stay unseen by choices)
    ex, cand = state.export, state.candidates
    shipped = ex.objective_ppl or next((o["ppl"] for o in opts if o["recipe"] == rep["quant"]), None)
    chosen = {"ms": rep["pruned"]["decode_ms_per_token"], "quality": shipped,
              "label": f"shipped {_short(rep['quant'])} ({rep['latency_source']})"} if shipped else None
    dense = {"ms": rep["dense"]["decode_ms_per_token"], "quality": cand.dense_f16_ppl,
             "label": "dense F16 (at the shipped recipe's latency)", "tag": "dense F16"} if cand.dense_f16_ppl else None
    obj = (rep.get("data_sets") or {}).get("objective") or {}
    where = (f"{obj.get('windows', '?')}×{obj.get('seq_len', '?')} tokens of {obj.get('source', 'held-out text')}"
             if obj else "held-out text")
    return plots.tradeoff_png(path, series, budget_ms=rep["budget_ms_per_token"], chosen=chosen, dense=dense,
                              title=f"{rep['model']} on {rep['device']}: {what}", front=True,
                              ylabel=f"perplexity, objective windows ({where}; log scale)")


def _short(recipe: str) -> str:
    """A recipe name short enough to label a point (+im for the imatrix; an allocation without its digest)."""
    return recipe.replace(":imatrix", "+im").split(":alloc=")[0] + (":alloc" if ":alloc=" in recipe else "")


def write_all(rep: dict[str, Any], run_dir: Path, state: BuildState) -> None:
    write_json(run_dir / "report.json", rep)
    write_text(run_dir / "report.md", markdown(rep))
    tradeoff_from_trials(run_dir / "tradeoff.png", state, rep)


def stage_report(ctx: Any) -> Reported:
    """report.json, report.md and tradeoff.png from the other stages' results."""
    rep = build_report(ctx.state, ctx.spec)
    write_all(rep, ctx.run.path, ctx.state)
    return Reported(rep)
