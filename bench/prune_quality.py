"""Pruning quality on the default model: wikitext-2 perplexity after pruning, per ratio × metric × allocation.

Calibration: the first half (by paragraphs) of ../shared/data/wikitext-2/valid.txt, 32 windows × 256
tokens (random). Evaluation: 16 windows × 512 tokens from the held-out second half (disjoint text).
One calibration pass (with gradients) serves every row through the ImportanceCache. Prints a markdown
table and writes bench/results/prune_quality.json (rewritten after every row, so partial runs count).

    python3 bench/prune_quality.py [--ratios 0.1,0.2,0.3,0.5] [--metrics ...] [--allocations global,uniform]
                                   [--head-units none,query]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
OUT = ROOT / "bench" / "results" / "prune_quality.json"
METRICS = "taylor,taylor2,wanda,fluctuation,l1,l2,random"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratios", default="0.2,0.1,0.3,0.5")
    ap.add_argument("--metrics", default=METRICS)
    ap.add_argument("--allocations", default="global,uniform")
    ap.add_argument("--head-units", default="none,query", help="attention units to try (none = FFN only)")
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--eval-len", type=int, default=512)
    ap.add_argument("--align", type=int, default=32)
    args = ap.parse_args()

    from adaprune_edge import models
    from adaprune_edge.data.calibration import CalibrationPool, split_text
    from adaprune_edge.prune.importance import ImportanceCache
    from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows
    from adaprune_edge.prune.engine import PruneConfig, prune

    lm = models.load("default")
    calib_text, held_text = split_text(read_text(WIKI), 0.5)
    pool = CalibrationPool.from_records(calib_text.split("\n\n"), lm.tokenizer, args.seq_len, (str(WIKI),))
    ev = token_windows(lm.tokenizer, held_text, args.eval_len, args.eval_windows)
    t = time.perf_counter()
    dense_ppl = perplexity(lm.model, ev)
    rows = [{"ratio": 0.0, "metric": "dense", "allocation": "-", "ppl": dense_ppl, "params": sum(p.numel() for p in lm.model.parameters()),
             "decoder_ratio": 0.0, "total_ratio": 0.0, "prune_s": 0.0, "eval_s": time.perf_counter() - t}]
    print(f"dense ppl {dense_ppl:.3f} on {ev.shape[0]}x{ev.shape[1]} held-out tokens", flush=True)
    cache = ImportanceCache()
    meta = {"model": "default (SmolLM2-135M-Instruct, fp32 from Q4_1 GGUF)", "calibration": f"{WIKI.name} first half, {args.n_samples}x{args.seq_len} random",
            "evaluation": f"{WIKI.name} second half, {ev.shape[0]}x{ev.shape[1]}", "align": args.align,
            "threads": torch.get_num_threads()}
    for ratio in (float(r) for r in args.ratios.split(",")):
        for metric in args.metrics.split(","):
            for allocation, head_unit in ((a, h) for a in args.allocations.split(",") for h in args.head_units.split(",")):
                cfg = PruneConfig(ratio=ratio, metric=metric, allocation=allocation, n_samples=args.n_samples,
                                  seq_len=args.seq_len, align=args.align, head_unit=head_unit)
                t = time.perf_counter()
                res = prune(lm.model, pool, cfg, cache=cache)
                prune_s = time.perf_counter() - t
                t = time.perf_counter()
                ppl = perplexity(res.model, ev)
                rows.append({"ratio": ratio, "metric": metric, "allocation": allocation, "head_unit": head_unit, "ppl": ppl if math.isfinite(ppl) else None,
                             "params": res.params_after, "decoder_ratio": res.decoder_ratio, "total_ratio": res.total_ratio,
                             "prune_s": prune_s, "eval_s": time.perf_counter() - t, "shapes": res.structure.condensed(),
                             "statistics_s": res.timings.get("statistics_s", 0.0)})
                del res
                r = rows[-1]
                print(f"ratio {ratio:.1f} {metric:12s} {allocation:8s} {head_unit:6s} ppl {ppl:12.3f}  -{100 * r['decoder_ratio']:.1f}% decoder "
                      f"-{100 * r['total_ratio']:.1f}% all  prune {prune_s:6.1f}s  rss {peak_rss_gib():.2f} GiB", flush=True)
                OUT.parent.mkdir(parents=True, exist_ok=True)
                OUT.write_text(json.dumps({**meta, "peak_rss_gib": peak_rss_gib(), "rows": rows}, indent=2) + "\n")
    print(table(rows, peak_rss_gib()))


def table(rows: list[dict], rss: float) -> str:
    lines = ["| ratio | metric | allocation | heads | PPL | params | -% decoder | -% all | prune s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ppl = "inf" if r["ppl"] is None else f"{r['ppl']:.2f}"
        lines.append(f"| {r['ratio']:.1f} | {r['metric']} | {r['allocation']} | {r.get('head_unit', '-')} | {ppl} | {r['params'] / 1e6:.2f}M | "
                     f"{100 * r['decoder_ratio']:.1f} | {100 * r['total_ratio']:.1f} | {r['prune_s']:.1f} |")
    lines.append(f"\npeak RSS of the whole run (pruning + evaluation): {rss:.2f} GiB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
