"""Peak RSS and wall time of one `prune` (fixed recipe) on the default model and on random-initialised
Llama models built locally with the shapes of SmolLM2-360M, Qwen2.5-0.5B (llama layout) and
Llama-3.2-1B. Quality is irrelevant here; shapes and memory are the point.

Every case runs in a fresh grandchild process; its child reads the grandchild's max RSS with
resource.getrusage(RUSAGE_CHILDREN), so the figure covers model construction + calibration + pruning
of that case alone. Recipe: sequential, obs, uniform allocation, FFN only (head_unit none), ratio 0.2
of the decoder, align 32, inplace (as the CLI). Calibration windows: random token ids for the random
models, wikitext-2 valid for the default model. Writes bench/results/scale.json and prints a table.

    nice -n 10 python3 bench/scale.py [--cases default,smollm2-360m,qwen2.5-0.5b,llama-3.2-1b]
                                      [--n-samples 32] [--n-samples-1b 8] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "scale.json"
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
SHAPES = {  # hidden, layers, heads, kv heads, ffn, vocab, tied ("tiny": a smoke test of this script)
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=1000, tie_word_embeddings=True),
    "smollm2-360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                         intermediate_size=2560, vocab_size=49152, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
}


def recipe(n_samples: int, seq_len: int, **kw):
    from adaprune_edge.prune.engine import PruneConfig

    return PruneConfig(**{**dict(ratio=0.2, metric="obs", allocation="uniform", head_unit="none", sequential=True,
                                 n_samples=n_samples, seq_len=seq_len, align=32), **kw})


def build(case: str, seq_len: int):
    """(model, calibration source) of a case."""
    import torch

    if case == "default":
        from adaprune_edge import models
        from adaprune_edge.data.calibration import CalibrationPool
        from adaprune_edge.evaluate.perplexity import read_text

        lm = models.load("default")
        text = read_text(WIKI)
        return lm.model, CalibrationPool.from_records(text.split("\n\n"), lm.tokenizer, seq_len, (str(WIKI),))
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=5e5, **SHAPES[case])
    model = LlamaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    return model, torch.randint(0, cfg.vocab_size, (256, seq_len), generator=gen)


def run_case(case: str, n_samples: int, seq_len: int, threads: int, extra: dict) -> dict:
    """The work of one case, in this (grandchild) process."""
    import torch

    from adaprune_edge.prune.engine import prune
    from adaprune_edge.prune.footprint import estimate
    from adaprune_edge.archs.structure import Structure

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, calib = build(case, seq_len)
    build_s = time.perf_counter() - t0
    cfg = recipe(n_samples, seq_len, **extra)
    fp = estimate(Structure.from_model(model), model.config.vocab_size, cfg)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    res = prune(model, calib, cfg, inplace=True)
    return {"case": case, "params": res.params_before, "decoder_params": res.decoder_params_before,
            "decoder_ratio": res.decoder_ratio, "build_s": build_s, "prune_s": time.perf_counter() - t0,
            "timings": res.timings, "estimate_gib": fp.total / 2**30, "estimate": fp.describe(),
            "peak_rss_after_build_gib": rss_built / 2**30, "config": cfg.to_dict()}


def measure(case: str, args: argparse.Namespace) -> dict:
    """Run one case in a grandchild; report its peak RSS (RUSAGE_CHILDREN of this child)."""
    cmd = [sys.executable, __file__, "--run", case, "--n-samples", str(_samples(case, args)), "--seq-len",
           str(args.seq_len), "--threads", str(args.threads), "--extra", args.extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode != 0:
        return {"case": case, "error": proc.stderr.strip().splitlines()[-1:], "peak_rss_gib": peak / 2**30}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "peak_rss_gib": peak / 2**30, "wall_s": wall}


def _samples(case: str, args: argparse.Namespace) -> int:
    return args.n_samples_1b if case == "llama-3.2-1b" else args.n_samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="default,smollm2-360m,qwen2.5-0.5b,llama-3.2-1b")
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--n-samples-1b", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extra", default="{}", help="JSON of PruneConfig fields overriding the recipe")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_case(args.run, args.n_samples, args.seq_len, args.threads, json.loads(args.extra))))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args)))
        return
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    rows = {r["case"] + r.get("tag", ""): r for r in old.get("rows", [])}
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--measure", case, "--n-samples", str(args.n_samples), "--n-samples-1b",
               str(args.n_samples_1b), "--seq-len", str(args.seq_len), "--threads", str(args.threads), "--extra", args.extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["tag"] = "" if args.extra == "{}" else f" {args.extra}"
        rows[case + row["tag"]] = row
        print(json.dumps(row), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"recipe": "ratio 0.2 of the decoder, obs, uniform, sequential, head_unit none, align 32, inplace",
                                   "peak_rss": "max RSS of a fresh process per case (RUSAGE_CHILDREN), model construction included",
                                   "command": "nice -n 10 python3 bench/scale.py " + " ".join(sys.argv[1:]),
                                   "rows": list(rows.values())}, indent=2) + "\n")
    print(table(list(rows.values())))


def table(rows: list[dict]) -> str:
    lines = ["| case | extra | params | calib windows | peak RSS GiB | estimate GiB | build s | prune s | -% decoder |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r.get('tag', '')} | error: {r['error']} | | {r['peak_rss_gib']:.2f} | | | | |")
            continue
        lines.append(f"| {r['case']} | {r.get('tag', '')} | {r['params'] / 1e6:.0f}M | {r['config']['n_samples']}x{r['config']['seq_len']} | "
                     f"{r['peak_rss_gib']:.2f} | {r['estimate_gib']:.2f} | {r['build_s']:.0f} | {r['prune_s']:.0f} | {100 * r['decoder_ratio']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
