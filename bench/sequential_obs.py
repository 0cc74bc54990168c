"""Sequential + structured OBS vs today's best fixed recipe (taylor/uniform + least-squares
reconstruction) vs FLAP-like (fluctuation/global + bias compensation), on the default model.

Calibration: the first half (by paragraphs) of ../shared/data/wikitext-2/valid.txt, N windows × T
tokens (random). Evaluation: perplexity on windows of the held-out second half of wikitext-2 valid
(never used for calibration) and on PTB valid. Writes bench/results/sequential_obs.json after every row
(partial runs count) and prints a markdown table.

    nice -n 10 python3 bench/sequential_obs.py [--ratios 0.2,0.35] [--n-samples 32] [--eval-windows 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WIKI, PTB = DATA / "wikitext-2" / "valid.txt", DATA / "ptb" / "ptb.valid.txt"
OUT = ROOT / "bench" / "results" / "sequential_obs.json"
RECIPES = {  # name -> PruneConfig fields
    "taylor/uniform+lsq": dict(metric="taylor", allocation="uniform", reconstruction=True),
    "flap-like (fluctuation/global+bias)": dict(metric="fluctuation", allocation="global", bias_compensation=True),
    "obs/uniform": dict(metric="obs", allocation="uniform"),
    "taylor/uniform+lsq sequential": dict(metric="taylor", allocation="uniform", reconstruction=True, sequential=True),
    "obs/uniform sequential": dict(metric="obs", allocation="uniform", sequential=True),
    "obs/global sequential": dict(metric="obs", allocation="global", sequential=True),
}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratios", default="0.2,0.35")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--eval-len", type=int, default=512)
    ap.add_argument("--head-unit", default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(OUT), help="JSON to write; rows of an existing file are kept")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(args.threads)

    from adaprune_edge import models
    from adaprune_edge.data.calibration import CalibrationPool, split_text
    from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows
    from adaprune_edge.prune.engine import PruneConfig, prune
    from adaprune_edge.prune.importance import ImportanceCache

    lm = models.load("default")
    calib_text, held_text = split_text(read_text(WIKI), 0.5)
    pool = CalibrationPool.from_records(calib_text.split("\n\n"), lm.tokenizer, args.seq_len, (str(WIKI),))
    evals = {"wikitext2_heldout": token_windows(lm.tokenizer, held_text, args.eval_len, args.eval_windows),
             "ptb_valid": token_windows(lm.tokenizer, read_text(PTB), args.eval_len, args.eval_windows)}
    meta = {"model": "default (SmolLM2-135M-Instruct, fp32 from Q4_1 GGUF)",
            "calibration": f"{WIKI.name} first half by paragraphs, {args.n_samples} random windows x {args.seq_len} tokens",
            "evaluation": {k: f"{v.shape[0]} windows x {v.shape[1]} tokens" + (" (second half of wikitext-2 valid, disjoint from calibration)" if k.startswith("wiki") else " (ptb.valid.txt from the start)")
                           for k, v in evals.items()},
            "scaled_down": "32x256 calibration and 16x512 evaluation windows per set instead of full sets; no PIQA/ARC-e (time)",
            "head_unit": args.head_unit, "threads": torch.get_num_threads(),
            "command": "nice -n 10 python3 bench/sequential_obs.py " + " ".join(sys.argv[1:])}
    old = json.loads(out.read_text())["rows"] if out.exists() else []
    todo = {(float(x), name) for x in args.ratios.split(",") for name in args.recipes.split(",")}
    rows = [r for r in old if (r["ratio"], r["recipe"]) not in todo]
    if not any(r["recipe"] == "dense" for r in rows):
        t = time.perf_counter()
        rows.insert(0, {"ratio": 0.0, "recipe": "dense", **{k: perplexity(lm.model, v) for k, v in evals.items()},
                        "decoder_ratio": 0.0, "total_ratio": 0.0, "prune_s": 0.0, "eval_s": time.perf_counter() - t})
    print(f"dense {rows[0]}", flush=True)
    cache = ImportanceCache()
    for ratio in (float(r) for r in args.ratios.split(",")):
        for name in args.recipes.split(","):
            cfg = PruneConfig(ratio=ratio, n_samples=args.n_samples, seq_len=args.seq_len, align=32,
                              head_unit=args.head_unit, **RECIPES[name])
            t = time.perf_counter()
            res = prune(lm.model, pool, cfg, cache=cache)
            prune_s = time.perf_counter() - t
            t = time.perf_counter()
            ppl = {k: perplexity(res.model, v) for k, v in evals.items()}
            rows.append({"ratio": ratio, "recipe": name, **ppl, "decoder_ratio": res.decoder_ratio,
                         "total_ratio": res.total_ratio, "prune_s": prune_s, "eval_s": time.perf_counter() - t,
                         "shapes": res.structure.condensed(), "config": cfg.to_dict()})
            del res
            print(f"{ratio:.2f} {name:40s} " + " ".join(f"{k} {v:9.3f}" for k, v in ppl.items())
                  + f"  -{100 * rows[-1]['decoder_ratio']:.1f}% decoder  prune {prune_s:.0f}s  rss {peak_rss_gib():.2f} GiB", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({**meta, "peak_rss_gib": peak_rss_gib(), "rows": rows, "gain": gains(rows)}, indent=2) + "\n")
    print(table(rows))


def gains(rows: list[dict]) -> dict[str, float]:
    """PPL reduction of every recipe vs taylor/uniform+lsq at the same ratio (positive = lower PPL)."""
    base = {r["ratio"]: r for r in rows if r["recipe"] == "taylor/uniform+lsq"}
    out = {}
    for r in rows:
        b = base.get(r["ratio"])
        if b is not None and r is not b:
            for k in ("wikitext2_heldout", "ptb_valid"):
                out[f"{r['ratio']:.2f} {r['recipe']} {k}"] = 1.0 - r[k] / b[k]
    return out


def table(rows: list[dict]) -> str:
    lines = ["| ratio | recipe | wiki-2 held-out PPL | PTB PPL | -% decoder | -% all | prune s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ratio']:.2f} | {r['recipe']} | {r['wikitext2_heldout']:.2f} | {r['ptb_valid']:.2f} | "
                     f"{100 * r['decoder_ratio']:.1f} | {100 * r['total_ratio']:.1f} | {r['prune_s']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
