"""Dense default model (SmolLM2-135M-Instruct, fp32 torch): PIQA valid and ARC-easy zero-shot accuracy
(lm-eval-harness prompts, acc / acc_norm), wikitext-2 valid perplexity, and time per 100 examples.

    python3 bench/eval_default.py [--limit 200] [--windows 8] [--data-dir ../shared/data]

Writes bench/results/eval_default.json and prints a table with third-party lm-eval 0-shot figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adaprune_edge import models
from adaprune_edge.evaluate import harness
from adaprune_edge.evaluate import tasks
from adaprune_edge.evaluate.divergence import evaluate_windows
from adaprune_edge.evaluate.perplexity import read_text, token_windows
from adaprune_edge.runs import write_json

ROOT = Path(__file__).resolve().parents[1]
# lm-eval 0-shot, full splits, SmolLM2-135M-Instruct ("Baseline" column of a public lm-eval table on
# the hub, lldois/SmolLM2-135M-Reasoning-SLERP-Champion); the official card reports lighteval numbers.
PUBLISHED = {"piqa acc_norm": 0.6692, "arc_easy acc": 0.5412}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200, help="seeded subset per task (PIQA valid has 1838, ARC-e dev 570)")
    ap.add_argument("--windows", type=int, default=8, help="wikitext-2 valid windows of --seq-len tokens")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_default.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    t0 = time.perf_counter()
    lm = models.load("default")
    load_s = time.perf_counter() - t0
    scorer = harness.TorchScorer(lm.model, lm.tokenizer, batch_size=args.batch_size)
    results = [harness.evaluate_task(scorer, tasks.load(name, args.data_dir), args.limit, args.seed)
               for name in ("piqa", "arc_easy")]
    wins = token_windows(lm.tokenizer, read_text(Path(args.data_dir) / "wikitext-2" / "valid.txt"), args.seq_len, args.windows)
    t1 = time.perf_counter()
    ppl = evaluate_windows(scorer, wins)
    ppl_s = time.perf_counter() - t1

    table = Table(title=f"dense default model, torch fp32, {os.cpu_count()} cores (load {load_s:.1f} s)")
    for col in ("metric", "value", "± stderr", "n", "s / 100 ex.", "published (lm-eval, full split)"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    rows = []
    for r in results:
        for metric, val, se in (("acc", r.acc, r.acc_stderr), ("acc_norm", r.acc_norm, r.acc_norm_stderr)):
            key = f"{r.task} {metric}"
            pub = PUBLISHED.get(key)
            table.add_row(key, f"{val:.4f}", f"{se:.4f}", str(r.n), f"{100 * r.seconds / r.n:.1f}" if metric == "acc" else "",
                          f"{pub:.4f}" if pub else "")
            rows.append({"metric": key, "value": val, "stderr": se, "n": r.n, "published": pub})
    table.add_row(f"wikitext-2 valid ppl ({wins.shape[0]}x{args.seq_len})", f"{ppl.ppl:.3f}", "", str(ppl.n_tokens),
                  f"{ppl_s / wins.shape[0]:.2f} s/window", "")
    Console().print(table)
    write_json(Path(args.out), {
        "model": "default (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to fp32)", "backend": "torch",
        "settings": vars(args), "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "tasks": [r.to_dict() for r in results], "rows": rows,
        "seconds_per_100_examples": {r.task: 100 * r.seconds / r.n for r in results},
        "wikitext2_valid": ppl.to_dict(), "ppl_seconds": ppl_s, "published": PUBLISHED,
        "load_seconds": load_s, "total_seconds": time.perf_counter() - t0})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
