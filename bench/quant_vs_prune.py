"""Quantization vs pruning at equal budgets on the default model: what plain quantization gives, what the
tool did before quant recipes were planned, and what `build` ships now.

Budgets are fractions of the dense Q8_0 decode time on a device. Per budget, three GGUFs:
  before      the profile's quant (Q4_K_M, no imatrix) + pruning at its r_min with the warm-start recipe
              (taylor/uniform + least-squares reconstruction: the recipe the old main job shipped)
  quant-only  the best dense quantized file that meets the budget (the build's candidates stage), or none
  build       what `adaprune-edge build --trials N` ships for that budget
each scored with llama.cpp on the same token ids: wikitext-2 valid (windows from the second half) and PTB
valid perplexity, KL(dense torch ‖ GGUF) on the wikitext windows; size; decode ms/token as the device's
backend gives it (predicted for raspberry-pi-5). Calibration is the build's default (builtin:self), so no
wikitext/PTB text was ever calibrated on. Writes bench/results/quant_vs_prune.json after every row.

    python3 bench/quant_vs_prune.py [--device raspberry-pi-5] [--fractions 0.95,0.85,0.75,0.65,0.55] [--trials 4]

`--front` measures the trade-off the plan faces once recovery exists (bench/results/quant_vs_prune_front.json
and .png): budgets are fractions of the dense Q4_K_M file's predicted decode ms/token (bytes per token on a
bandwidth-bound device). All 13 candidate recipes quantize the dense model (imatrix from builtin:self
records 0%-50%); per budget: the best of them that meets it (chosen on the evaluation windows themselves:
the most favourable quant-only baseline), and the plan's pruned candidate (the recipe minimising
ln PPL + 2 x r_min among those that need pruning) pruned to its r_min with structured OBS, sequential,
exported and quantized (imatrix of the pruned model) before and after recovery (`--recover-tokens` of
builtin:self, the build's default recovery text). Same windows as above for every file.

    python3 bench/quant_vs_prune.py --front [--fractions 0.9,0.75,0.6,0.45] [--recover-tokens 100000]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results" / "quant_vs_prune.json"
WORK = ROOT / "bench" / "runs" / "quant_vs_prune"


def windows(lm, path: Path, n: int, second_half: bool):
    from adaprune_edge.data.calibration import split_text
    from adaprune_edge.evaluate.perplexity import read_text, token_windows

    text = read_text(path)
    if second_half:
        text = split_text(text, 0.5)[1]
    return token_windows(lm.tokenizer, text, 512, n).numpy()


def score(path: Path, lm, wiki, ptb) -> dict:
    from adaprune_edge.evaluate import validation
    from adaprune_edge.pipeline.quant_options import gguf_ppl

    v = validation.validate(path, wiki, torch_model=lm.model, threads=2)
    return {"file_bytes": path.stat().st_size, "wikitext_ppl": round(v.ppl, 3), "kl_vs_dense": round(v.kl_mean, 4),
            "top1": round(v.top1, 4), "ptb_ppl": round(gguf_ppl(path, ptb), 3)}


def before(lm, base, profile, budget_ms: float, folder: Path, calib) -> tuple[Path, float, float]:
    """The old behaviour: Q4_K_M, prune to its r_min with taylor/uniform + reconstruction."""
    from adaprune_edge.latency import budget
    from adaprune_edge.exporters import gguf, quantize, vocab
    from adaprune_edge.prune.engine import PruneConfig, prune
    from adaprune_edge.latency.predictor import Predictor
    from adaprune_edge.latency.roofline import predict
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.quant import QuantRecipe

    q4 = QuantRecipe("Q4_K_M")
    sol = budget.solve(base, profile, Predictor.of(profile, q4), "uniform", max_ratio=0.9, decode_ms=budget_ms)
    r = 1 - sol.structure.decoder_params() / base.decoder_params()
    path = folder / "before-Q4_K_M.gguf"
    if not path.is_file():
        cfg = PruneConfig(ratio=r, metric="taylor", allocation="uniform", reconstruction=True, recon_damp=0.3,
                          n_samples=32, seq_len=256, align=256)
        res = prune(lm.model, calib, cfg)
        f16 = folder / "before-F16.gguf"
        gguf.write_model(res.model, f16, vocab.for_model(lm, base.vocab))
        quantize.quantize(f16, path, q4)
        f16.unlink()
    st = Structure.from_dict(json.loads(json.dumps(sol.structure.to_dict())))
    return path, r, predict(st, q4, profile).decode_ms_per_token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="raspberry-pi-5")
    ap.add_argument("--fractions", default=None, help="default 0.95,0.85,0.75,0.65,0.55 (x Q8_0); --front: 0.9,0.75,0.6,0.45 (x Q4_K_M)")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seed-from", type=Path, default=None, help="a finished build dir (same options) whose dense files to reuse")
    ap.add_argument("--front", action="store_true", help="quant-only vs prune + recover + quantize (see above)")
    ap.add_argument("--recover-tokens", type=int, default=100000)
    args = ap.parse_args()
    if args.front:
        import quant_vs_prune_front

        return quant_vs_prune_front.main(args, windows, score)
    args.fractions = args.fractions or "0.95,0.85,0.75,0.65,0.55"

    from adaprune_edge import models, profiles
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.pipeline.build import BuildSpec, run_build
    from adaprune_edge.pipeline.quant_options import dense_file
    from adaprune_edge.latency.roofline import predict
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.quant import QuantRecipe

    lm = models.load("default")
    profile = profiles.load_profile(args.device)
    base = Structure.from_model(lm.model)
    q8 = predict(base, QuantRecipe("Q8_0"), profile).decode_ms_per_token
    wiki = windows(lm, DATA / "wikitext-2" / "valid.txt", args.windows, True)
    ptb = windows(lm, DATA / "ptb" / "ptb.valid.txt", args.windows, False)
    calib = CalibrationPool.from_sources(["builtin:self"], lm.tokenizer, 256, (0.0, 0.8), loaded=lm).windows[:32]
    result = {"device": args.device, "dense_q8_0_ms": q8, "eval": f"wikitext-2 valid 2nd half {args.windows}x512, "
              f"PTB valid {args.windows}x512; KL vs dense torch on the wikitext windows", "rows": []}
    result["dense_torch_wikitext_ppl"] = round(math.exp(_torch_nll(lm.model, wiki)), 3)
    previous = args.seed_from
    for frac in [float(f) for f in args.fractions.split(",")]:
        budget_ms = round(frac * q8, 4)
        folder = WORK / f"{args.device}-{frac:.2f}"
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        bpath, r, bms = before(lm, base, profile, budget_ms, folder, calib)
        result["rows"].append({"fraction": frac, "budget_ms": budget_ms, "what": "before (Q4_K_M + pruning)",
                               "recipe": "Q4_K_M", "decoder_pruned": round(r, 4), "decode_ms": round(bms, 3),
                               **score(bpath, lm, wiki, ptb)})
        spec = BuildSpec(device=args.device, budget_ms=budget_ms, trials=args.trials, seed=0)
        _seed(folder / "build", spec, previous)
        rep = run_build(spec, folder / "build", resume=True)
        previous = folder / "build"
        qo = rep.get("quant_only") or {}
        if qo:
            qpath = dense_file(Path(rep["gguf"]).parent, QuantRecipe.parse(qo["recipe"]))
            result["rows"].append({"fraction": frac, "budget_ms": budget_ms, "what": "quant-only (best meeting the budget)",
                                   "recipe": qo["recipe"], "decoder_pruned": 0.0,
                                   "decode_ms": round(qo["decode_ms_per_token"], 3), **score(qpath, lm, wiki, ptb)})
        else:
            result["rows"].append({"fraction": frac, "budget_ms": budget_ms, "what": "quant-only (best meeting the budget)",
                                   "recipe": "none"})
        result["rows"].append({"fraction": frac, "budget_ms": budget_ms, "what": "build ships", "recipe": rep["quant"],
                               "mode": rep["mode"], "decoder_pruned": rep["decoder_ratio"],
                               "decode_ms": round(rep["pruned"]["decode_ms_per_token"], 3), "budget_met": rep["budget_met"],
                               "build_seconds": rep["stage_seconds"], **score(Path(rep["gguf"]), lm, wiki, ptb)})
        result["rows"][-1]["row_seconds"] = round(time.perf_counter() - t0, 1)
        OUT.write_text(json.dumps(result, indent=1))
        _print(result["rows"][-3:])


def _seed(run: Path, spec, previous: Path | None) -> None:
    """Start a budget's build from the previous budget's dense quantized files and their scores (they do
    not depend on the budget), so only new recipes are quantized and scored."""
    from adaprune_edge.runs import write_json

    if (run / "state.json").exists():
        return
    run.mkdir(parents=True, exist_ok=True)
    for f in (previous.iterdir() if previous else ()):
        if f.name.startswith("dense-") or f.name in ("imatrix.gguf", "candidate_scores.json"):
            (run / f.name).hardlink_to(f)
    write_json(run / "state.json", {"spec": spec.to_dict(), "done": {}})


def _torch_nll(model, wins) -> float:
    import torch

    from adaprune_edge.evaluate.perplexity import window_nll

    return float(torch.as_tensor(window_nll(model, torch.as_tensor(wins))).mean())


def _print(rows) -> None:
    for r in rows:
        print(f"{r['fraction']:.2f} x Q8_0 ({r['budget_ms']:.2f} ms) | {r['what']:38s} | {r['recipe']:34s} | "
              + (f"pruned {r['decoder_pruned']:.1%} | {r['file_bytes'] / 1e6:6.1f} MB | {r['decode_ms']:.2f} ms | "
                 f"wiki {r['wikitext_ppl']:.2f} | PTB {r['ptb_ppl']:.2f} | KL {r['kl_vs_dense']:.3f}" if "file_bytes" in r else "-"),
              flush=True)


if __name__ == "__main__":
    main()
