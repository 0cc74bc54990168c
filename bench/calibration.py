"""Which calibration text? One fixed recipe (taylor/uniform + least-squares reconstruction) at two ratios,
calibrated on each source, scored on general text the calibration never saw.

Sources: builtin:pydoc, tinyshakespeare, wikitext-2 valid (first half of its paragraphs), builtin:self
(text sampled from the dense model, the default config of selfgen.py) and a mix (equal windows of self,
pydoc and tinyshakespeare). Scores: perplexity on wikitext-2 valid (second half) and PTB valid
(`--eval-windows` × 512 tokens each, torch fp32) and zero-shot PIQA / ARC-easy accuracy (`--limit` items,
seeded subset). Writes bench/results/calibration.json after every row and prints a markdown table.

    python3 bench/calibration.py [--ratios 0.2,0.35] [--n-samples 32] [--limit 100] [--eval-windows 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WIKI, PTB, SHAKES = DATA / "wikitext-2" / "valid.txt", DATA / "ptb" / "ptb.valid.txt", DATA / "tinyshakespeare" / "input.txt"
OUT = ROOT / "bench" / "results" / "calibration.json"


def pools(lm, seq_len: int, progress) -> dict:
    from adaprune_edge.data.calibration import CalibrationPool

    tok = lm.tokenizer
    p = {"pydoc": CalibrationPool.from_sources(["builtin:pydoc"], tok, seq_len),
         "tinyshakespeare": CalibrationPool.from_sources([str(SHAKES)], tok, seq_len),
         "wikitext2-valid-first-half": CalibrationPool.from_sources([str(WIKI)], tok, seq_len, (0.0, 0.5)),
         "self": CalibrationPool.from_sources(["builtin:self"], tok, seq_len, loaded=lm, progress=progress)}
    return p


def mix(p: dict, n: int, seed: int = 0) -> torch.Tensor:
    """Equal shares of self, pydoc and tinyshakespeare windows (seeded random picks)."""
    names = ("self", "pydoc", "tinyshakespeare")
    parts = [p[k].windows[p[k].sample(n // len(names) + (i < n % len(names)), "random", seed + i)] for i, k in enumerate(names)]
    return torch.cat(parts)


def scores(model, tok, evals: dict, tasks: dict, limit: int) -> dict:
    from adaprune_edge.evaluate import harness
    from adaprune_edge.evaluate.perplexity import perplexity

    out = {f"ppl_{k}": perplexity(model, w) for k, w in evals.items()}
    scorer = harness.TorchScorer(model, tok)
    for name, data in tasks.items():
        r = harness.evaluate_task(scorer, data, limit)
        out[f"acc_{name}"], out[f"acc_norm_{name}"] = r.acc, r.acc_norm
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratios", default="0.2,0.35")
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=8)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--sources", default="self,wikitext2-valid-first-half,pydoc,tinyshakespeare,mix",
                    help="calibration rows in this order (comma list)")
    ap.add_argument("--resume", action="store_true", help="keep rows already in the JSON, run only missing ones")
    args = ap.parse_args()

    from adaprune_edge import models
    from adaprune_edge.evaluate import tasks
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.prune.importance import ImportanceCache
    from adaprune_edge.prune.engine import PruneConfig, prune

    lm = models.load("default")
    t0 = time.perf_counter()
    p = pools(lm, args.seq_len, None)
    gen_s = time.perf_counter() - t0
    ev = {"wikitext2_second_half": CalibrationPool.from_sources([str(WIKI)], lm.tokenizer, 512, (0.5, 1.0)).windows[: args.eval_windows],
          "ptb_valid": CalibrationPool.from_sources([str(PTB)], lm.tokenizer, 512).windows[: args.eval_windows]}
    tk = {name: tasks.load(name, DATA) for name in ("piqa", "arc_easy")}
    meta = {"model": "default (SmolLM2-135M-Instruct, fp32 from Q4_1 GGUF)",
            "recipe": "taylor/uniform + reconstruction, head_unit none, align 32",
            "calibration": f"{args.n_samples}x{args.seq_len} random windows per source", "sources_s": round(gen_s, 1),
            "pool_tokens": {k: int(v.windows.numel()) for k, v in p.items()},
            "evaluation": f"{args.eval_windows}x512 tokens wikitext-2 valid second half / PTB valid (torch fp32); "
                          f"piqa, arc_easy acc on {args.limit} seeded items", "threads": torch.get_num_threads()}
    print(f"pools ready in {gen_s:.0f} s: {meta['pool_tokens']}", flush=True)
    rows = json.loads(OUT.read_text())["rows"] if args.resume and OUT.is_file() else []
    done = {(r["ratio"], r["calibration"]) for r in rows}
    if (0.0, "dense") not in done:
        rows.append({"ratio": 0.0, "calibration": "dense", **scores(lm.model, lm.tokenizer, ev, tk, args.limit)})
        print(rows[-1], flush=True)
    sources = {**p, "mix(self,pydoc,shakespeare)": None}
    order = [next(k for k in sources if k.startswith(name)) for name in args.sources.split(",")]
    for ratio in (float(r) for r in args.ratios.split(",")):
        for name, pool in ((k, sources[k]) for k in order):
            if (ratio, name) in done:
                continue
            calib = mix(p, args.n_samples) if pool is None else pool
            cfg = PruneConfig(ratio=ratio, metric="taylor", allocation="uniform", reconstruction=True,
                              n_samples=args.n_samples, seq_len=args.seq_len)
            t = time.perf_counter()
            res = prune(lm.model, calib, cfg, cache=ImportanceCache())
            row = {"ratio": ratio, "calibration": name, "decoder_ratio": res.decoder_ratio, "prune_s": round(time.perf_counter() - t, 1)}
            row.update(scores(res.model, lm.tokenizer, ev, tk, args.limit))
            rows.append(row)
            del res
            print(row, flush=True)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(table(rows))


def table(rows: list[dict]) -> str:
    lines = ["| removed | calibration | wikitext-2 PPL | PTB PPL | PIQA acc | ARC-e acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['ratio']:.0%} | {r['calibration']} | {r['ppl_wikitext2_second_half']:.2f} | {r['ppl_ptb_valid']:.2f} | "
                     f"{r['acc_piqa']:.3f} | {r['acc_arc_easy']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
