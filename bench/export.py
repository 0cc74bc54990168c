"""Export benchmark: dense and 20/30/50% pruned default model → F16 and Q4_K_M GGUF.

Columns: file size and bits/weight (Q4_K_M), torch PPL, F16 GGUF PPL, Q4_K_M PPL, KL(Q4_K_M‖F16) in
nats/token, top-1 agreement, decode tokens/s (Q4_K_M, 2 threads). Perplexity on 8×512-token windows of
wikitext-2 valid (no BOS), the same token ids for torch and llama.cpp. Pruned variants come from
adaprune_edge.prune.engine.prune (wanda metric, global allocation, bias compensation, FFN widths aligned to 256,
calibration on wikitext-2 valid windows disjoint from the evaluation windows).

    python3 bench/export.py [--ratios 0.2 0.3 0.5] [--windows 8] [--out bench/results/export.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from adaprune_edge import models
from adaprune_edge.evaluate import validation
from adaprune_edge.exporters import gguf, quantize, vocab
from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "valid.txt"


def pruned(lm: models.LoadedModel, ratio: float, calib) -> tuple[object, dict]:
    if ratio == 0:
        return lm.model, {"method": "dense"}
    from adaprune_edge.prune.engine import PruneConfig, prune

    cfg = PruneConfig(ratio=ratio, metric="wanda", allocation="global", n_samples=16, seq_len=256,
                      bias_compensation=True, align=256, seed=0)
    res = prune(lm.model, calib, cfg)
    return res.model, {"method": "adaprune_edge.prune.engine.prune", "config": cfg.to_dict(),
                       "decoder_ratio": res.decoder_ratio, "total_ratio": res.total_ratio}


def run_variant(lm, ratio, windows, calib, meta, folder: Path, threads: int) -> dict:
    model, how = pruned(lm, ratio, calib)
    st = Structure.from_model(model)
    t0 = time.perf_counter()
    f16 = gguf.write_model(model, folder / f"r{ratio}-F16.gguf", meta)
    q4_k_m = QuantRecipe("Q4_K_M")
    q4 = gguf.write_model(model, folder / f"r{ratio}-Q4_K_M.gguf", meta, quant=q4_k_m)
    export_s = time.perf_counter() - t0
    rep = quantize.report(q4.path, st, q4_k_m)
    torch_ppl = perplexity(model, windows)
    wins = windows.numpy()
    f16_llm = validation.llama_runner.open_gguf(f16.path, n_ctx=wins.shape[1], threads=threads)
    q4_llm = validation.llama_runner.open_gguf(q4.path, n_ctx=wins.shape[1], threads=threads)
    try:
        sc = validation.score_windows(validation.gguf_logits_fn(q4_llm), wins, validation.gguf_logits_fn(f16_llm))
    finally:
        f16_llm.close()
        q4_llm.close()
    speed = validation.measure_speed(q4.path, threads, [int(t) for t in wins[0][:128]], decode_tokens=64)
    return {"ratio": ratio, **how, "arch": f16.arch, "structure": st.condensed(),
            "decoder_params": st.decoder_params(), "params": st.params(),
            "f16_bytes": f16.file_bytes, "q4_k_m_bytes": q4.file_bytes, "q4_k_m_bpw": rep.bits_per_weight,
            "q4_k_m_fallbacks": len(rep.fallbacks), "type_mismatches": len(rep.mismatches),
            "torch_ppl": torch_ppl, "f16_ppl": sc.ref_ppl, "q4_k_m_ppl": sc.ppl,
            "f16_vs_torch": sc.ref_ppl / torch_ppl - 1, "kl_q4_f16": float(np.mean(sc.kl)),
            "top1_q4_f16": float(np.mean(sc.top1)), "decode_tps": speed.decode_tps, "prefill_tps": speed.prefill_tps,
            "threads": threads, "export_s": export_s, "biases": len(f16.biases)}


def table(rows: list[dict]) -> str:
    head = ("| variant | arch | decoder params | Q4_K_M size | bits/w | torch PPL | F16 PPL (Δ) | Q4_K_M PPL "
            "| KL(Q4_K_M‖F16) | top-1 | decode tok/s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        name = "dense" if r["ratio"] == 0 else f"{r['ratio']:.0%} (achieved {r['decoder_ratio']:.1%})"
        lines.append(f"| {name} | {r['arch']} | {r['decoder_params'] / 1e6:.1f}M | {r['q4_k_m_bytes'] / 1e6:.1f} MB "
                     f"| {r['q4_k_m_bpw']:.2f} | {r['torch_ppl']:.3f} | {r['f16_ppl']:.3f} ({r['f16_vs_torch']:+.2%}) "
                     f"| {r['q4_k_m_ppl']:.3f} | {r['kl_q4_f16']:.4f} | {r['top1_q4_f16']:.1%} | {r['decode_tps']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.5])
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export.json")
    args = ap.parse_args()
    lm = models.load("default")
    text = read_text(DATA)
    windows = token_windows(lm.tokenizer, text, 512, args.windows)
    calib = token_windows(lm.tokenizer, text, 256, 16, offset_windows=2 * args.windows + 2)  # disjoint
    meta = vocab.for_model(lm, lm.info.vocab)
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for ratio in args.ratios:
            rows.append(run_variant(lm, ratio, windows, calib, meta, Path(tmp), args.threads))
            print(f"done {ratio}: {json.dumps(rows[-1], default=str)}", file=sys.stderr, flush=True)
            # rewritten after every variant so a long run that is stopped keeps what it measured
            args.out.write_text(json.dumps({"host": platform.node(), "windows": args.windows, "seq_len": 512,
                                            "rows": rows}, indent=2) + "\n")
    print(table(rows))
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
