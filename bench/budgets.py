"""Budgets people state, per bundled profile: which limit binds, which lever the plan pulls, what it ships.

For every bundled device profile the build's own `candidates` and `plan` stages run on the default model
(one shared work folder: the dense quantized files and their perplexities are the same for every profile):
the stated limits (decode tokens/s, first token after a P-token prompt, RAM at the context length), the
plan's lever (quantization alone, or pruning at r_min) and recipe, and the chosen file's figures against
each limit — predicted on `predict` profiles, measured on `this-host` (llama-cpp-python, 2 threads).
`--build-report` adds the measured figures of finished builds (their report.json) as rows of their own.
Writes bench/results/budgets.json and prints the table.

    python3 bench/budgets.py [--profiles a,b] [--build-report runs/th/report.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "budgets.json"
WORK = ROOT / "bench" / "runs" / "budgets"


def _figures(lat, ram: int, profile, budget_ms=None) -> dict:
    from adaprune_edge.latency import budget

    checks = budget.constraints(lat, ram, profile, budget_ms)
    b = profile.budget
    return {"decode_tps": round(1000 / lat.decode_ms_per_token, 1), "prefill_tps": round(lat.prefill_tps, 1),
            "ttft_s": round(budget.ttft_s(lat, b.prompt_tokens), 3) if b.prompt_tokens else None,
            "ram_mib": round(ram / 2**20, 1), "measured": lat.measured,
            "binding": budget.binding(checks).to_dict(), "all_met": all(c.ok for c in checks)}


def plan_row(name: str) -> dict:
    """The plan of `build --device name` on the default model, and the chosen file's figures."""
    from adaprune_edge.pipeline import plan_stages
    from adaprune_edge.pipeline.context import BuildContext
    from adaprune_edge.pipeline.build import BuildSpec, Hooks, RunDir
    from adaprune_edge.latency import budget

    WORK.mkdir(parents=True, exist_ok=True)
    ctx = BuildContext(BuildSpec(device=name), RunDir(WORK), Hooks())
    ctx.state = ctx.state.with_result("candidates", plan_stages.stage_candidates(ctx))
    plan = plan_stages.stage_plan(ctx)
    ctx.state = ctx.state.with_result("plan", plan)
    p, base = ctx.profile, plan.base_structure
    if plan.mode == "quant-only":
        o = next(o for o in ctx.state.candidates.options if o.recipe == plan.quant)
        lat, st = ctx.device.latency_of_file(plan_stages.quant_options.dense_file(WORK, o.recipe), base, o.recipe), base
        lever = "quantization alone"
    else:
        sol = plan.solution
        lat = sol.measured or sol.predicted
        st = budget.uniform(base, sol.ratio, plan.quant)
        lever = f"pruning {plan.r_min:.1%} of the decoder"
    best = min((o for o in ctx.state.candidates.options if o.ppl), key=lambda o: o.ppl)
    return {"profile": name, "limits": p.budget.describe(), "context_length": p.context_length,
            "ram_limit_mib": round(p.usable_ram_bytes / 2**20), "lever": lever, "recipe": plan.quant.name,
            "decision": plan.reason, "shipped": _figures(lat, budget.ram_of(st, plan.quant, p), p),
            "best_quality_dense": {"recipe": best.recipe.name, "ppl": best.ppl, "binding": best.binding},
            "source": "plan (bench/budgets.py)"}


def _prompt_flop_ratio(rep: dict, prompt: int | None) -> float | None:
    """Dense / shipped GFLOP per prompt token at the budget's prompt length (matmuls + attention)."""
    from adaprune_edge import models
    from adaprune_edge.latency.roofline import Workload, prompt_gflop
    from adaprune_edge.quant import QuantRecipe
    from adaprune_edge.archs.structure import Structure

    if not prompt:
        return None
    base = Structure.from_model(models.load(rep["model"]).model)
    shipped = Structure.from_dict(rep["structure"])
    quant = QuantRecipe.parse(rep["quant"])
    return round(prompt_gflop(Workload.from_structure(base, quant), prompt)
                 / prompt_gflop(Workload.from_structure(shipped, quant), prompt), 3)


def build_row(path: Path) -> dict:
    """A finished build's measured figures (report.json)."""
    rep = json.loads(Path(path).read_text())
    b, lat = rep["budget"], rep["pruned"]
    return {"profile": rep["device"], "limits": rep.get("limits") or _describe(b), "context_length": b["context_length"],
            "ram_limit_mib": b["ram_limit_mib"], "recipe": rep["quant"],
            "lever": ("quantization alone" if rep["mode"] == "quant-only" else f"pruning {rep['decoder_ratio']:.1%} of the decoder")
                     + (f" + {kv} K/V cache" if (kv := (rep.get("kv_cache") or {}).get("type", "F16")) != "F16" else ""),
            "decision": rep["decision"], "source": f"build ({path})",
            "shipped": {"decode_tps": round(1000 / lat["decode_ms_per_token"], 1), "prefill_tps": round(lat["prefill_tps"], 1),
                        "ttft_s": next((c["value"] for c in rep["constraints"] if c["name"].startswith("time to first")), None),
                        "ram_mib": round(rep["ram_bytes"] / 2**20, 1),
                        "runtime_rss_mib": round((rep["runtime_ram"]["peak_rss_bytes"] - rep["runtime_ram"]["baseline_rss_bytes"]) / 2**20, 1),
                        "measured": rep["latency_source"] == "measured", "binding": rep["binding"],
                        "all_met": all(c["ok"] for c in rep["constraints"])},
            "report_ppl": {"dense": rep["dense"]["ppl"], "shipped": rep["pruned"]["ppl"]},
            "prompt_speedup": round(lat["prefill_tps"] / rep["dense"]["prefill_tps"], 3),
            "prompt_flop_ratio": _prompt_flop_ratio(rep, b.get("prompt_tokens"))}


def _describe(b: dict) -> str:
    from adaprune_edge.profiles import Budget

    return Budget.from_dict({k: v for k, v in b.items() if k in Budget.__dataclass_fields__}).describe()


def table(rows: list[dict]) -> str:
    out = ["| profile | limits | binds (margin) | lever | shipped recipe | decode tok/s | first token s | RAM MiB (limit) | source |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, b = r["shipped"], r["shipped"]["binding"]
        kind = "measured" if s["measured"] else "predicted"
        ttft = f"{s['ttft_s']:.3f}" if s["ttft_s"] is not None else "-"
        out.append(f"| {r['profile']} | {r['limits']} | {b['name']} ({b['margin']:+.0%}) | {r['lever']} | {r['recipe']} "
                   f"| {s['decode_tps']:.0f} | {ttft} | {s['ram_mib']:.0f} ({r['ram_limit_mib']:.0f}) | {kind}, "
                   f"{r['source'].split(' ')[0]} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiles", default="", help="comma-separated (default: every bundled profile; '-': none, "
                    "only the --build-report rows are redone)")
    ap.add_argument("--build-report", action="append", default=[], help="report.json of a finished build")
    ap.add_argument("--table", action="store_true", help="print the table of budgets.json and exit")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(OUT.read_text())["rows"]))
        return
    from adaprune_edge import profiles

    names = [] if args.profiles == "-" else [n for n in args.profiles.split(",") if n] or profiles.builtin_names()
    doc = json.loads(OUT.read_text()) if OUT.is_file() else {"rows": []}
    keep = [r for r in doc["rows"] if r["profile"] not in names and r["source"].startswith("plan")]  # earlier plans
    rows = keep + [plan_row(n) for n in names]
    rows = sorted(rows, key=lambda r: r["profile"]) + [build_row(Path(p)) for p in args.build_report]
    command = "python3 bench/budgets.py " + " ".join(sys.argv[1:])
    doc = {"commands": [c for c in doc.get("commands", []) if c != command] + [command],
           "model": "default (SmolLM2-135M-Instruct)", "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
