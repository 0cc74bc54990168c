"""Per-tensor bit allocation (adaprune_edge.bitalloc) vs uniform quant recipes and pruning at equal predicted
decode budgets, default model (issue 28).

    python3 bench/quant_alloc.py [--device raspberry-pi-5] [--budget-ms 10.8] [--fractions 0.75,0.6,0.45]

Scored like bench/quant_vs_prune.py --front, whose files and scores are reused read-only: llama.cpp PPL on
wikitext-2 valid (2nd half) and PTB valid, 8x512 windows each; KL(dense torch ‖ GGUF) and top-1 on the wikitext
windows; decode_ms is the device's prediction. Imatrices: builtin:self calibration windows 0-15; sensitivity
probes: windows 16-17 (never evaluation text). bench/results/quant_alloc.json:
  main         at --budget-ms, dense model: the allocation; every uniform recipe of the 13 candidates meeting the
               budget and the best (lowest wikitext PPL); kl_reduction = 1 - KL(allocation) / KL(best uniform);
               dense Q4_K_M:imatrix (the quality target); control: every tensor Q4_1 (the default model's weights
               are dequantized Q4_1, so Q4_1 is near-lossless on its layers)
  grid         per fraction of dense Q4_K_M's predicted ms: "quant only" (best uniform), "allocation" (dense),
               "prune + allocation" (each cached pruned model of the front bench, recovered or not), "prune +
               uniform" (the front bench's pruned files meeting it); winner: lowest wikitext PPL among them
  error_model  predicted damage (sum of alpha x error) vs measured KL: distinct dense allocations at ERROR_BUDGETS,
               the Q4_1 control, random two-type mixes; then also the uniform files (their real tensor types)
  predicted_kl is to the model the allocator ran on (a pruned model: to it, not to the dense model as in
               kl_vs_dense); kl_vs_own_model measures that (pruned rows)
  timing       wall seconds of sensitivity.compute (first, uncached run) and of allocate
Resumable: GGUFs, imatrices, sensitivities and scores (by file name) stay in bench/runs/quant_alloc/."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "quant_alloc.json"
# bench/runs lives in the main checkout (not in git worktrees)
MAIN = Path(subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                           capture_output=True, text=True, check=True).stdout.strip()).parent
WORK = MAIN / "bench" / "runs" / "quant_alloc"
FRONT = MAIN / "bench" / "runs" / "quant_vs_prune" / "front"
ERROR_BUDGETS = (7.0, 8.0, 9.0, 9.25, 9.5, 9.75, 10.0, 10.25, 10.5, 10.8, 11.0, 12.0, 13.0, 14.0)  # ms/token


@dataclass
class Subject:
    """A model the allocator runs on: its structure, F16 GGUF, imatrix and sensitivity."""

    tag: str
    model: Any
    st: Any
    f16: Path
    imatrix: Any
    sens: Any


class Scores:
    """file name → score dict: the front bench's (read-only) or ours, kept in WORK/scores.json."""

    def __init__(self, fn, *args) -> None:
        self.path, self.fn, self.args = WORK / "scores.json", fn, args
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.front = json.loads((FRONT / "scores.json").read_text())

    def __call__(self, gguf: Path) -> dict:
        if gguf.parent == FRONT and gguf.name in self.front:
            return self.front[gguf.name]
        if gguf.name not in self.data:
            self.data[gguf.name] = self.fn(gguf, *self.args)
            self.path.write_text(json.dumps(self.data, indent=1))
        return self.data[gguf.name]

    def own(self, gguf: Path, model) -> float:
        """KL(`model` ‖ GGUF) on the wikitext windows: a pruned file's quantization damage alone."""
        from adaprune_edge.evaluate import validation

        key = f"{gguf.name} | KL vs its own torch model"
        if key not in self.data:
            self.data[key] = round(validation.validate(gguf, self.args[1], torch_model=model, threads=2).kl_mean, 4)
            self.path.write_text(json.dumps(self.data, indent=1))
        return self.data[key]


def subject(tag: str, model, lm, base, calib, timing: dict) -> Subject:
    """F16 (the front bench's if it has one), imatrix and sensitivity of `model`, cached in WORK."""
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.bitalloc import sensitivity
    from adaprune_edge.exporters import gguf, imatrix, vocab
    from adaprune_edge.gguf.header import read_header

    f16 = FRONT / f"{tag}-F16.gguf"
    if not f16.is_file():
        f16 = WORK / f"{tag}-F16.gguf"
        if not f16.is_file():
            gguf.write_model(model, f16, vocab.for_model(lm, base.vocab))
    arch = read_header(f16)[0]["general.architecture"]
    ipath = WORK / f"{tag}-imatrix.gguf"
    if not ipath.is_file():
        imatrix.collect(model, calib[:16], ("builtin:self",)).save(ipath)
    im = imatrix.Imatrix.load(ipath)
    before, t0 = set(WORK.glob("sensitivity-*.json")), time.perf_counter()
    sens = sensitivity.compute(model, f16, im, calib[16:18], WORK, arch, threads=2,
                               progress=lambda s: print(f"  {tag} sensitivity: {s}", flush=True))
    if set(WORK.glob("sensitivity-*.json")) - before:  # computed now, not read from the cache
        timing.setdefault("sensitivity_seconds", {})[tag] = round(time.perf_counter() - t0, 1)
    return Subject(tag, model, Structure.from_model(model), f16, im, sens)


def allocate(s: Subject, device, budget_ms: float, timing: dict | None = None):
    """(allocation of `s` under `budget_ms` or None, why not), with its wall seconds in `timing`."""
    from adaprune_edge.bitalloc import solver
    from adaprune_edge.errors import LatencyError

    t0 = time.perf_counter()
    try:
        a = solver.allocate(s.st, s.sens, solver.device_check(s.st, device, budget_ms))
    except LatencyError as e:
        print(f"  {s.tag} at {budget_ms:.2f} ms: {e}", flush=True)
        return None, str(e)
    if timing is not None:
        timing.setdefault("allocate_seconds", {})[f"{s.tag} @ {budget_ms:.2f} ms"] = round(time.perf_counter() - t0, 2)
    return a, ""


def quantized(s: Subject, recipe) -> Path:
    from adaprune_edge.exporters import quantize

    out = WORK / f"{s.tag}-{recipe.label}.gguf"
    if not out.is_file():
        quantize.quantize(s.f16, out, recipe, threads=2, imatrix=s.imatrix)
    return out


def predicted(s: Subject, types: dict[str, str]) -> float | None:
    """Sum of damage over `s`'s tensors at `types` (None if a tensor's type was not measured)."""
    names = [t.name for t in s.st.tensors()]
    if any(types.get(n) not in s.sens.errors[n] for n in names):
        return None
    return sum(s.sens.damage(n, types[n]) for n in names)


def row(what: str, lever: str, s: Subject, st, recipe, path: Path, device, budget_ms, scores, **extra) -> dict:
    from adaprune_edge.bitalloc import solver

    ms = device.predict(st, recipe).decode_ms_per_token
    meets = solver.device_check(st, device, budget_ms)(recipe).margin >= 0
    if lever.startswith("prune") and meets:
        extra["kl_vs_own_model"] = scores.own(path, s.model)
    return {"what": what, "lever": lever, "model": s.tag, "recipe": recipe.name, "decode_ms": round(ms, 3),
            "meets_budget": meets, **extra, **scores(path)}


def alloc_row(what: str, lever: str, s: Subject, a, device, budget_ms, scores) -> dict:
    types = dict(a.recipe.assign)
    return row(what, lever, s, s.st, a.recipe, quantized(s, a.recipe), device, budget_ms, scores,
               predicted_kl=round(a.damage, 5), binding=a.binding.describe(), types=dict(Counter(types.values())))


def random_types(s: Subject, seed: int) -> dict[str, str]:
    """A random two-type mix: each tensor takes type a with probability p, else b (llama.cpp's fall-back
    where the row does not fit the type)."""
    from gguf import GGMLQuantizationType as QT

    from adaprune_edge.bitalloc.sensitivity import TYPES
    from adaprune_edge.quant import LLAMA_FALLBACK

    rng = random.Random(seed)
    a, b = rng.sample(TYPES, 2)
    p, out = rng.random(), {}
    for t in s.st.tensors():
        q = a if rng.random() < p else b
        out[t.name] = q if q in s.sens.errors[t.name] else LLAMA_FALLBACK[QT[q]].name
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 5)


def spearman(pairs: list[dict]) -> float:
    from scipy.stats import spearmanr

    return round(float(spearmanr([p["predicted_kl"] for p in pairs], [p["kl_vs_dense"] for p in pairs])[0]), 3)


@dataclass
class Bench:
    """What every section shares: the device, the dense model's structure and Subject, the 13 uniform
    recipes with their rows, the scorer, the result (written by save())."""

    device: Any
    base: Any
    dense: Subject
    names: list
    uni: dict
    scores: Scores
    result: dict
    save: Any

    def uniform_meeting(self, budget_ms: float) -> list[dict]:
        from adaprune_edge.pipeline import quant_options

        opts = quant_options.options(self.base, self.device, self.names, budget_ms, 0.9, measure=False)
        return [{**self.uni[o.recipe.name], "meets_budget": True} for o in opts if o.r_min == 0.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="raspberry-pi-5")
    ap.add_argument("--budget-ms", type=float, default=10.8)
    ap.add_argument("--fractions", default="0.75,0.6,0.45", help="x dense Q4_K_M's predicted decode ms/token")
    ap.add_argument("--windows", type=int, default=8)
    args = ap.parse_args()

    import torch
    from quant_vs_prune import score, windows

    from adaprune_edge import models
    from adaprune_edge.archs.slicing import load_pruned
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.device import Device
    from adaprune_edge.pipeline import quant_options

    torch.set_num_threads(2)
    WORK.mkdir(parents=True, exist_ok=True)
    lm = models.load("default")
    device, base = Device.resolve(args.device), Structure.from_model(lm.model)
    wiki = windows(lm, DATA / "wikitext-2" / "valid.txt", args.windows, True)
    ptb = windows(lm, DATA / "ptb" / "ptb.valid.txt", args.windows, False)
    calib = CalibrationPool.from_sources(["builtin:self"], lm.tokenizer, 256, (0.0, 0.5), loaded=lm).windows[:32]
    scores = Scores(score, lm, wiki, ptb)
    tpath = WORK / "timing.json"
    timing = json.loads(tpath.read_text()) if tpath.is_file() else {}
    result = {"device": args.device, "command": " ".join(["python3", "bench/quant_alloc.py", *sys.argv[1:]]),
              "eval": f"wikitext-2 valid 2nd half {args.windows}x512, PTB valid {args.windows}x512 (llama.cpp); "
                      "KL and top-1 vs dense torch on the wikitext windows", "timing": timing}

    def save() -> None:
        tpath.write_text(json.dumps(timing, indent=1))
        OUT.write_text(json.dumps(result, indent=1) + "\n")

    dense = subject("dense", lm.model, lm, base, calib, timing)
    names = quant_options.recipes(None, True)
    uni = {n.name: row("uniform", "quant only", dense, base, n, FRONT / f"dense-{n.label}.gguf", device, None, scores)
           for n in names}
    b = Bench(device, base, dense, names, uni, scores, result, save)
    ctrl = main_row(b, args.budget_ms, timing)
    folders = sorted(p for p in FRONT.glob("pruned-*") if (p / "structure.json").is_file())
    pruned = [subject(p.name, load_pruned(p)[0], lm, base, calib, timing) for p in folders]
    save()
    grid(b, pruned, [float(f) for f in args.fractions.split(",")])
    error_model(b, ctrl)
    print(table(result))


def main_row(b: Bench, budget_ms: float, timing: dict) -> dict:
    """The allocation vs every uniform recipe meeting `budget_ms`; returns the all-Q4_1 control row."""
    from adaprune_edge.quant import QuantRecipe

    fits = b.uniform_meeting(budget_ms)
    best = min(fits, key=lambda d: d["wikitext_ppl"])
    a, _ = allocate(b.dense, b.device, budget_ms, timing)
    arow = alloc_row("allocation", "allocation", b.dense, a, b.device, budget_ms, b.scores)
    q4 = {**b.uni["Q4_K_M:imatrix"], "what": "reference (quality target)", "meets_budget": None}
    # the default model's layer weights are dequantized Q4_1: every tensor at Q4_1 shows what that alone gives
    all_q41 = {t.name: "Q4_1" for t in b.base.tensors()}
    q41 = QuantRecipe.allocated(all_q41)
    ctrl = row("every tensor Q4_1 (control, not a candidate)", "control", b.dense, b.base, q41, quantized(b.dense, q41),
               b.device, budget_ms, b.scores, predicted_kl=round(predicted(b.dense, all_q41), 5))
    b.result["main"] = {"budget_ms": budget_ms, "allocation": arow, "best_uniform": best, "uniform_meeting": fits,
                        "kl_reduction": round(1 - arow["kl_vs_dense"] / best["kl_vs_dense"], 3), "dense_Q4_K_M": q4,
                        "control_all_Q4_1": ctrl}
    b.save()
    return ctrl


def grid(b: Bench, pruned: list[Subject], fractions: list[float]) -> None:
    """Per budget (fraction x dense Q4_K_M's predicted ms): every lever's rows and the winner."""
    from adaprune_edge.exporters.quantize import tensor_types
    from adaprune_edge.quant import QuantRecipe

    ref = b.device.predict(b.base, QuantRecipe("Q4_K_M")).decode_ms_per_token
    front_uniform = [(s, n) for s in pruned for n in b.names if f"{s.tag}-{n.label}.gguf" in b.scores.front]
    b.result["reference_ms"], b.result["grid"] = round(ref, 3), []
    for frac in fractions:
        ms = round(frac * ref, 4)
        g = {"fraction": frac, "budget_ms": ms, "rows": []}
        b.result["grid"].append(g)
        fits = b.uniform_meeting(ms)
        g["rows"].append({**min(fits, key=lambda d: d["wikitext_ppl"]), "what": "best uniform"} if fits else
                         {"what": "best uniform", "lever": "quant only", "recipe": "none meets the budget"})
        for s in [b.dense] + pruned:
            a, why = allocate(s, b.device, ms)
            lever = "allocation" if s is b.dense else "prune + allocation"
            g["rows"].append(alloc_row("allocation", lever, s, a, b.device, ms, b.scores) if a else
                             {"what": "allocation", "lever": lever, "model": s.tag, "recipe": "unreachable", "why": why})
            b.save()
        for s, n in front_uniform:
            f = FRONT / f"{s.tag}-{n.label}.gguf"
            r = row("front bench uniform", "prune + uniform", s, s.st, n, f, b.device, ms, b.scores,
                    predicted_kl=_round(predicted(s, tensor_types(f))))
            if r["meets_budget"]:
                g["rows"].append(r)
        win = min((r for r in g["rows"] if r.get("meets_budget")), key=lambda r: r["wikitext_ppl"], default=None)
        g["winner"] = {k: win[k] for k in ("lever", "model", "recipe", "wikitext_ppl")} if win else None
        b.save()


def error_model(b: Bench, ctrl: dict) -> None:
    """Predicted damage vs measured KL: the distinct dense allocations at ERROR_BUDGETS, the all-Q4_1
    control, random mixes; then with the uniform files (their real tensor types) added."""
    from adaprune_edge.exporters.quantize import tensor_types
    from adaprune_edge.quant import QuantRecipe

    keys = ("recipe", "predicted_kl", "kl_vs_dense", "wikitext_ppl")
    pairs, seen = [], set()
    for ms in ERROR_BUDGETS:
        a, _ = allocate(b.dense, b.device, ms)
        if a and a.recipe.name not in seen:
            seen.add(a.recipe.name)
            r = alloc_row("allocation", "allocation", b.dense, a, b.device, ms, b.scores)
            pairs.append({"kind": f"allocation @ {ms} ms", **{k: r[k] for k in keys}})
    pairs.append({"kind": "every tensor Q4_1", **{k: ctrl[k] for k in keys}})
    for seed in range(6):
        types = random_types(b.dense, seed)
        recipe = QuantRecipe.allocated(types)
        r = b.scores(quantized(b.dense, recipe))
        pairs.append({"kind": f"random mix {seed}", "recipe": recipe.name, "types": dict(Counter(types.values())),
                      "predicted_kl": round(predicted(b.dense, types), 5), **{k: r[k] for k in keys[2:]}})
    uniform = [{"kind": "uniform", "recipe": n.name, "predicted_kl": _round(predicted(b.dense, tensor_types(FRONT / f"dense-{n.label}.gguf"))),
                **{k: b.uni[n.name][k] for k in keys[2:]}} for n in b.names]
    uniform = [u for u in uniform if u["predicted_kl"] is not None]
    b.result["error_model"] = {"spearman_rho": spearman(pairs), "n": len(pairs), "pairs": pairs,
                               "with_uniform": {"spearman_rho": spearman(pairs + uniform), "n": len(pairs + uniform),
                                                "uniform_pairs": uniform}}
    b.save()


def table(result: dict) -> str:
    """The rows as a markdown table, then the headline figures."""
    head = ["budget", "row", "lever", "model", "recipe", "MB", "ms/token", "wikitext-2", "PTB", "KL", "top-1", "pred. KL", "KL own"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = (("file_bytes", lambda v: f"{v / 1e6:.1f}"), ("decode_ms", "{:.2f}".format), ("wikitext_ppl", "{:.2f}".format),
           ("ptb_ppl", "{:.2f}".format), ("kl_vs_dense", "{:.4f}".format), ("top1", "{:.3f}".format),
           ("predicted_kl", "{:.4f}".format), ("kl_vs_own_model", "{:.4f}".format))
    m, grid_rows = result["main"], [(f"{g['fraction']:.2f}x ({g['budget_ms']:.2f} ms)", r) for g in result.get("grid", []) for r in g["rows"]]
    for budget, r in [(f"{m['budget_ms']} ms", r) for r in (m["allocation"], {**m["best_uniform"], "what": "best uniform"},
                                                             m["dense_Q4_K_M"], m["control_all_Q4_1"])] + grid_rows:
        recipe = r["recipe"] + (f" (cheapest types: {r['why'].split(' give ')[-1].split(' >')[0]})" if r.get("why") else "")
        cells = [budget, r["what"], r["lever"], r.get("model", ""), recipe] + [f(r[k]) if r.get(k) is not None else "" for k, f in fmt]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + f"\n\nKL reduction at {m['budget_ms']} ms vs the best uniform: {m['kl_reduction']:.1%}\n"
    out += "".join(f"winner at {g['fraction']:.2f}x: {g['winner']}\n" for g in result.get("grid", []))
    if "error_model" in result:
        e = result["error_model"]
        out += (f"error model: Spearman rho {e['spearman_rho']} (n={e['n']}); with the uniform files "
                f"{e['with_uniform']['spearman_rho']} (n={e['with_uniform']['n']})\n")
    return out + f"timing: {result['timing']}"


if __name__ == "__main__":
    main()
