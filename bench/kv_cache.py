"""Memory at long context: the K/V cache type as a lever, measured on the default model at 8192 positions.

For one dense quantized file of the default model and each K/V cache type llama.cpp offers on CPU (F16,
Q8_0, Q4_0; quantized V needs flash attention): perplexity on wikitext-2 valid (2 windows of 4096 tokens,
never calibrated on) and the runtime RSS of a fresh llama.cpp process with an 8192-token context filled,
against the RAM the plan predicts (weights + cache + runtime allowance). Then the plan's choice
(plan_stages.kv_cache_for) under a few memory limits at 8192 positions, and what pruning alone would need
(`fit` at F16 K/V: the uniform family keeps every KV group, so it cannot shrink the cache).
Writes bench/results/kv_cache.json.

    python3 bench/kv_cache.py --gguf runs/th/dense-Q8_0_imatrix.gguf --recipe Q8_0:imatrix
    python3 bench/kv_cache.py --repredict   # today's RAM model against the measured rows (no measuring)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "kv_cache.json"
CTX = 8192


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", help="a dense quantized GGUF of the default model")
    ap.add_argument("--recipe", help="its recipe (for the predicted bytes)")
    ap.add_argument("--repredict", action="store_true", help="recompute the predictions of the measured rows")
    ap.add_argument("--limits-mib", default="330,380,420,600", help="memory limits at 8192 positions")
    args = ap.parse_args()
    if args.repredict:
        return repredict()
    if not (args.gguf and args.recipe):
        ap.error("--gguf and --recipe are required (or --repredict)")

    from adaprune_edge import models
    from adaprune_edge.evaluate import validation
    from adaprune_edge.evaluate.perplexity import read_text, token_windows
    from adaprune_edge.runtime.llamacpp import open_gguf
    from adaprune_edge.evaluate.runtime_ram import measure_runtime_ram
    from adaprune_edge.quant import QuantRecipe
    from adaprune_edge.latency import budget
    from adaprune_edge.runtime import kvcache
    from adaprune_edge.archs.structure import Structure

    lm = models.load("default")
    base, recipe = Structure.from_model(lm.model), QuantRecipe.parse(args.recipe)
    windows = token_windows(lm.tokenizer, read_text(DATA / "wikitext-2" / "valid.txt"), 4096, 2).numpy()
    rows = []
    for kv in kvcache.ORDER:
        llm = open_gguf(args.gguf, n_ctx=4096, threads=2, kv_cache=kv)
        try:
            ppl = validation.score_windows(validation.gguf_logits_fn(llm), windows).ppl
        finally:
            llm.close()
        ram = measure_runtime_ram(args.gguf, n_ctx=CTX, threads=2, kv_cache=kv, fill=CTX, timeout_s=900)
        pred = budget.ram_bytes(base, recipe, CTX, kv)
        model_rss = ram.rss_bytes - ram.baseline_rss_bytes
        rows.append({"kv_cache": kv, "wikitext_ppl_4096": round(ppl, 4), "kv_bytes": budget.kv_bytes(base, CTX, kv),
                     "predicted_ram_mib": round(pred / 2**20, 1), "runtime_rss_mib": round(model_rss / 2**20, 1),
                     "rss_vs_predicted": round(model_rss / pred - 1, 4), "apply": kvcache.how_to_apply(kv)})
        print(rows[-1], flush=True)
    f16 = rows[0]["wikitext_ppl_4096"]
    for r in rows:
        r["ppl_cost"] = round(r["wikitext_ppl_4096"] / f16 - 1, 5)
    choices = plan_choices(base, [float(x) for x in args.limits_mib.split(",")])
    doc = {"command": f"python3 bench/kv_cache.py --gguf {args.gguf} --recipe {args.recipe}", "context": CTX,
           "recipe": args.recipe, "rows": rows, "plan_choices": choices,
           "pruning_note": "the uniform family keeps every KV group, so pruning does not shrink the K/V cache; "
                           "only removing layers or KV groups would"}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))


def table(doc: dict) -> str:
    """The README's table of cache types (markdown)."""
    out = ["| K/V cache | wikitext-2 PPL (2x4096) | vs F16 | cache at 8192 | RSS measured | RAM predicted | set it with |",
           "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        how = r["apply"].get("llama.cpp", "default")
        out.append(f"| {r['kv_cache']} | {r['wikitext_ppl_4096']:.2f} | {r['ppl_cost']:+.2%} | {r['kv_bytes'] / 2**20:.0f} MiB "
                   f"| {r['runtime_rss_mib']:.0f} MiB | {r['predicted_ram_mib']:.0f} MiB ({r['rss_vs_predicted']:+.1%}) | `{how}` |")
    return "\n".join(out)


def plan_choices(base, limits_mib: list[float]) -> list[dict]:
    """The plan's K/V cache choice (plan_stages.kv_cache_for) under each memory limit at CTX positions."""
    from adaprune_edge.pipeline import quant_options
    from adaprune_edge.pipeline.plan_stages import kv_cache_for
    from adaprune_edge.latency import budget
    from adaprune_edge.overrides import BudgetOverrides
    from adaprune_edge.profiles import load_profile

    host = BudgetOverrides(context_length=CTX).apply(load_profile("this-host"))
    names = quant_options.recipes(None, True)
    out = []
    for mib in limits_mib:
        p = dataclasses.replace(host, budget=dataclasses.replace(host.budget, ram_mb=mib))
        kv = kv_cache_for(base, names, p)
        q = dataclasses.replace(p, kv_cache_type=kv)
        fits = sorted((n for n in names if budget.ram_of(base, n, q) <= q.usable_ram_bytes), key=base.gguf_bytes)
        out.append({"ram_mb": mib, "kv_cache": kv, "largest_recipe_that_fits": fits[-1].name if fits else None,
                    "recipes_that_fit": len(fits),
                    "f16_cache_largest": next((n.name for n in sorted(names, key=base.gguf_bytes, reverse=True)
                                               if budget.ram_bytes(base, n, CTX) <= p.usable_ram_bytes), None)})
        print(out[-1], flush=True)
    return out


def repredict() -> None:
    """budget.ram_bytes of today's code for every measured row of kv_cache.json (the measurements stay)."""
    from adaprune_edge import models
    from adaprune_edge.latency import budget
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.quant import QuantRecipe

    doc = json.loads(OUT.read_text())
    base = Structure.from_model(models.load("default").model)
    for r in doc["rows"]:
        pred = budget.ram_bytes(base, QuantRecipe.parse(doc["recipe"]), doc["context"], r["kv_cache"])
        r["predicted_ram_mib"] = round(pred / 2**20, 1)
        r["kv_bytes"] = budget.kv_bytes(base, doc["context"], r["kv_cache"])  # the cache alone (no K·Q scratch)
        r["rss_vs_predicted"] = round(r["runtime_rss_mib"] / r["predicted_ram_mib"] - 1, 4)
        print(r["kv_cache"], r["runtime_rss_mib"], r["predicted_ram_mib"], r["rss_vs_predicted"])
    doc["plan_choices"] = plan_choices(base, [c["ram_mb"] for c in doc["plan_choices"]])
    doc["repredicted"] = "python3 bench/kv_cache.py --repredict"
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))


if __name__ == "__main__":
    main()
