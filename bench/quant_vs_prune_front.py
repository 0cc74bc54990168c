"""`quant_vs_prune.py --front`: the best quant-only file vs prune (+ recover) + quantize at budgets that are
fractions of the dense Q4_K_M decode time; a table, a JSON and a plot with the Pareto front over all files.
Resumable: every GGUF and score is kept in bench/runs/quant_vs_prune/front/."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "quant_vs_prune_front.json"
WORK = ROOT / "bench" / "runs" / "quant_vs_prune" / "front"


class Scores:
    """path → score dict, kept in WORK/scores.json (a resumed run scores nothing twice)."""

    def __init__(self, score, lm, wiki, ptb) -> None:
        self.path, self.fn, self.args = WORK / "scores.json", score, (lm, wiki, ptb)
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def __call__(self, gguf: Path) -> dict:
        if gguf.name not in self.data:
            self.data[gguf.name] = self.fn(gguf, *self.args)
            self.path.write_text(json.dumps(self.data, indent=1))
        return self.data[gguf.name]


def export(model, lm, base, recipe, calib, name: str) -> Path:
    """F16 GGUF of `model`, quantized with `recipe` and an imatrix of `model` on the calibration windows."""
    from adaprune_edge.exporters import imatrix
    from adaprune_edge.exporters import gguf, quantize, vocab

    out = WORK / f"{name}-{recipe.label}.gguf"
    if not out.is_file():
        f16 = WORK / f"{name}-F16.gguf"  # kept: every recipe of the same model quantizes it
        if not f16.is_file():
            gguf.write_model(model, f16, vocab.for_model(lm, base.vocab))
        if name not in _IMATRIX:
            _IMATRIX[name] = imatrix.collect(model, calib[:16], ("builtin:self",))
        quantize.quantize(f16, out, recipe, imatrix=_IMATRIX[name])
    return out


_IMATRIX: dict = {}


def pruned_and_recovered(lm, base, device, recipe, r_min: float, calib, self_windows, tokens: int):
    """(pruned model, structure, recovered model or None) at r_min for `recipe` (cached folders)."""
    import copy

    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.latency.budget import ffn_align
    from adaprune_edge.prune.engine import PruneConfig, prune
    from adaprune_edge.archs.slicing import load_pruned, save_pruned
    from adaprune_edge.recover.config import RecoverConfig
    from adaprune_edge.recover.distill import recover

    tag = f"pruned-{r_min:.4f}-a{ffn_align(recipe)}"
    folder = WORK / tag
    if not (folder / "structure.json").is_file():
        cfg = PruneConfig(ratio=r_min, metric="obs", allocation="uniform", sequential=True, n_samples=32, seq_len=256,
                          align=ffn_align(recipe))
        res = prune(lm.model, CalibrationPool.from_windows(calib), cfg)
        save_pruned(res.model, lm.tokenizer, folder, {"config": cfg.to_dict()})
    pruned = load_pruned(folder)[0]
    rfolder = WORK / f"{tag}-recovered-{tokens}"
    if not (rfolder / "structure.json").is_file():
        student = copy.deepcopy(pruned)
        res = recover(student, lm.model, self_windows, RecoverConfig(max_tokens=tokens), WORK / f"{tag}-ckpt")
        save_pruned(student, lm.tokenizer, rfolder, {"recovery": res.to_dict()})
    return pruned, tag, load_pruned(rfolder)[0], json.loads((rfolder / "structure.json").read_text())["recipe"]["recovery"]


def main(args, windows, score) -> None:
    from adaprune_edge import models
    from adaprune_edge.pipeline import quant_options
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.device import Device
    from adaprune_edge.recover.text import recovery_windows
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.quant import QuantRecipe

    WORK.mkdir(parents=True, exist_ok=True)
    lm = models.load("default")
    device = Device.resolve(args.device)
    base = Structure.from_model(lm.model)
    ref = device.predict(base, QuantRecipe("Q4_K_M")).decode_ms_per_token
    wiki = windows(lm, DATA / "wikitext-2" / "valid.txt", args.windows, True)
    ptb = windows(lm, DATA / "ptb" / "ptb.valid.txt", args.windows, False)
    calib = CalibrationPool.from_sources(["builtin:self"], lm.tokenizer, 256, (0.0, 0.5), loaded=lm).windows[:32]
    self_windows, text = recovery_windows(["builtin:self"], lm, 256, 0)
    scores = Scores(score, lm, wiki, ptb)
    names = quant_options.recipes(None, True)
    dense = {n: {**scores(export(lm.model, lm, base, n, calib, "dense")), "recipe": n.name,
                 "decode_ms": round(device.predict(base, n).decode_ms_per_token, 3)} for n in names}
    result = {"device": args.device, "reference": f"dense Q4_K_M predicted {ref:.3f} ms/token",
              "eval": f"wikitext-2 valid 2nd half {args.windows}x512, PTB valid {args.windows}x512 (llama.cpp); "
                      "KL vs dense torch on the wikitext windows",
              "recovery_text": text.to_dict(), "recover_tokens": args.recover_tokens, "dense": list(dense.values()),
              "rows": [], "command": "python3 bench/quant_vs_prune.py " + " ".join(sys.argv[1:])}
    for frac in [float(f) for f in (args.fractions or "0.9,0.75,0.6,0.45").split(",")]:
        budget_ms = round(frac * ref, 4)
        opts = {o.recipe: o for o in quant_options.options(base, device, names, budget_ms, 0.9, measure=False)}
        row = {"fraction": frac, "budget_ms": budget_ms}
        fits = [dense[n] for n, o in opts.items() if o.r_min == 0.0]
        best = min(fits, key=lambda d: d["wikitext_ppl"], default=None)
        result["rows"].append({**row, "what": "quant-only (best meeting the budget)", **(best or {"recipe": "none"}),
                               "decoder_pruned": 0.0})
        need = [o for o in opts.values() if o.r_min and o.r_min < 0.9]
        pick = min(need, key=lambda o: math.log(dense[o.recipe]["wikitext_ppl"]) + 2.0 * o.r_min)
        t0 = time.perf_counter()
        pruned, tag, recovered, rec = pruned_and_recovered(lm, base, device, pick.recipe, pick.r_min, calib, self_windows,
                                                           args.recover_tokens)
        st = Structure.from_model(pruned)
        common = {**row, "recipe": pick.recipe.name, "decoder_pruned": round(1 - st.decoder_params() / base.decoder_params(), 4),
                  "decode_ms": round(device.predict(st, pick.recipe).decode_ms_per_token, 3)}
        result["rows"].append({**common, "what": "pruned (no recovery)", **scores(export(pruned, lm, base, pick.recipe, calib, tag))})
        result["rows"].append({**common, "what": f"pruned + recovered ({rec['tokens']} tokens)", "recover_minutes": round(rec["seconds"] / 60, 1),
                               **scores(export(recovered, lm, base, pick.recipe, calib, f"{tag}-recovered-{args.recover_tokens}"))})
        result["rows"][-1]["row_seconds"] = round(time.perf_counter() - t0, 1)
        OUT.write_text(json.dumps(result, indent=1) + "\n")
        for r in result["rows"][-3:]:
            print(f"{frac:.2f} x Q4_K_M ({budget_ms:.2f} ms) | {r['what']:36s} | {r['recipe']:28s} | "
                  + (f"pruned {r['decoder_pruned']:.1%} | {r['file_bytes'] / 1e6:6.1f} MB | {r['decode_ms']:.2f} ms | "
                     f"wiki {r['wikitext_ppl']:.2f} | PTB {r['ptb_ppl']:.2f} | KL {r['kl_vs_dense']:.3f}" if "file_bytes" in r else "-"),
                  flush=True)
    plot(result, ROOT / "bench" / "results" / "quant_vs_prune_front.png")
    print(table(result))


def pareto(points: list[dict]) -> list[dict]:
    """Points no other point beats on both decode ms and wikitext PPL."""
    return [p for p in points if not any(q["decode_ms"] <= p["decode_ms"] and q["wikitext_ppl"] < p["wikitext_ppl"]
                                         and q is not p for q in points)]


def plot(result: dict, path: Path) -> None:
    from adaprune_edge.pipeline import plots

    rows = [r for r in result["rows"] if "file_bytes" in r]
    series = [{"label": "dense, 13 quant recipes (imatrix)", "ms": [d["decode_ms"] for d in result["dense"]],
               "quality": [d["wikitext_ppl"] for d in result["dense"]], "style": "s"}]
    for what, style in (("pruned (no recovery)", "x"), ("pruned + recovered", "o")):
        pts = [r for r in rows if r["what"].startswith(what)]
        series.append({"label": f"{what} at r_min", "ms": [r["decode_ms"] for r in pts],
                       "quality": [r["wikitext_ppl"] for r in pts], "style": style, "size": 9})
    front = sorted(pareto(result["dense"] + [r for r in rows if r["what"].startswith("pruned +")]), key=lambda p: p["decode_ms"])
    series.append({"label": "Pareto front (dense quant + recovered pruned)", "ms": [p["decode_ms"] for p in front],
                   "quality": [p["wikitext_ppl"] for p in front], "style": "-", "alpha": 0.5})
    plots.tradeoff_png(path, series, title=f"default model on {result['device']}: quantization vs prune + recover",
                       ylabel="wikitext-2 valid (2nd half) perplexity, llama.cpp")


def table(result: dict) -> str:
    lines = ["| budget | row | recipe | decoder pruned | MB | ms/token | wikitext-2 | PTB | KL |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "file_bytes" not in r:
            lines.append(f"| {r['fraction']:.2f}x ({r['budget_ms']:.2f} ms) | {r['what']} | none meets it | | | | | | |")
            continue
        lines.append(f"| {r['fraction']:.2f}x ({r['budget_ms']:.2f} ms) | {r['what']} | {r['recipe']} | {r['decoder_pruned']:.1%} | "
                     f"{r['file_bytes'] / 1e6:.1f} | {r['decode_ms']:.2f} | {r['wikitext_ppl']:.2f} | {r['ptb_ppl']:.2f} | {r['kl_vs_dense']:.3f} |")
    return "\n".join(lines)
