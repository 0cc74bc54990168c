"""Architecture adapters: GGUF parity with torch for every supported family, dense and pruned.

Tiny random models of each family are built from transformers configs (adaprune_edge.archs.tiny: hidden 64,
4 heads / 2 KV heads, FFN 128, vocab 49152 = the default model's tokenizer, so llama.cpp gets a real
vocabulary), plus the real default model (SmolLM2-135M, llama). Each is pruned by
adaprune_edge.prune.engine.prune — tiny models: l2 magnitude, 35% of decoder parameters, query heads + FFN
channels; SmolLM2: wanda on 16×256 calibration tokens of wikitext-2 valid (the second half of the file, the
evaluation windows come from the first), FFN channels, 30% — with uniform allocation, and global allocation
(per-layer widths) where llama.cpp can load them; uniform-only families refuse the latter — exported to
F16 and Q8_0 GGUF, and scored on the same token windows in torch and llama-cpp-python: perplexity, its
relative difference, KL(torch‖GGUF) in nats/token, top-1 agreement, max |logit difference| (F16), and a
short Q8_0 generation. Windows: wikitext-2 valid tokenized by the default tokenizer (random ids if the
shared data is missing).

    python3 bench/archs.py [--windows 4] [--seq-len 128] [--out bench/results/archs.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adaprune_edge import archs, models
from adaprune_edge.archs.tiny import tiny_model
from adaprune_edge.errors import AdapruneError
from adaprune_edge.evaluate import validation
from adaprune_edge.runtime import llamacpp as runner
from adaprune_edge.evaluate.perplexity import read_text, token_windows
from adaprune_edge.exporters import gguf, vocab
from adaprune_edge.prune.engine import PruneConfig, prune
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.archs.structure import Structure

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "valid.txt"
FAMILIES = ("llama", "llama3", "mistral", "qwen2", "qwen3", "gemma3_text", "smollm3", "phi3")
LAYERS = {"gemma3_text": 7, "smollm3": 5}
VOCAB = 49152


def score(path: str, model, windows: np.ndarray, threads: int, generate: bool = False) -> dict:
    llm = runner.open_gguf(path, n_ctx=windows.shape[1], threads=threads)
    try:
        s = validation.score_windows(validation.gguf_logits_fn(llm), windows, validation.torch_logits_fn(model))
        out = {"ppl": s.ppl, "torch_ppl": s.ref_ppl, "ppl_rel_diff": s.ppl / s.ref_ppl - 1,
               "kl_mean": float(np.mean(s.kl)), "top1": float(np.mean(s.top1))}
        if generate:
            out["generated"] = validation.generate(llm, "The capital of France is", max_tokens=8)
        else:
            got = runner.logits(llm, [int(t) for t in windows[0]])
            out["max_abs_logit_diff"] = float(np.abs(got - validation.torch_logits_fn(model)(windows[0])).max())
    finally:
        llm.close()
    return out


def variant(name: str, model, mode: str, meta, windows: np.ndarray, folder: Path, threads: int,
            calib=None) -> dict:
    row: dict = {"model": name, "mode": mode, "adapter": archs.adapter_for(model).name}
    if mode != "dense":
        if calib is None:
            cfg = PruneConfig(ratio=0.35, metric="l2", allocation=mode, head_unit="query", align=32)
        else:
            cfg = PruneConfig(ratio=0.3, metric="wanda", allocation=mode, n_samples=16, seq_len=256, align=32)
        row["prune_config"] = cfg.to_dict()
        try:
            res = prune(model, calib, cfg)
        except AdapruneError as e:
            return {**row, "refused": str(e)}
        model = res.model
        row["decoder_ratio"] = res.decoder_ratio
    st = Structure.from_model(model)
    row["structure"], row["uniform"] = st.condensed(), st.is_uniform
    f16 = gguf.write_model(model, folder / f"{name}-{mode}-F16.gguf", meta)
    q8 = gguf.write_model(model, folder / f"{name}-{mode}-Q8_0.gguf", meta, quant=QuantRecipe("Q8_0"))
    row["gguf_arch"], row["biases"] = f16.arch, len(f16.biases)
    row["f16"] = score(f16.path, model, windows, threads)
    row["q8_0"] = score(q8.path, model, windows, threads, generate=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results/archs.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    lm = models.load("default")
    meta = vocab.from_gguf(models.default_gguf_path())
    if DATA.is_file():
        text = read_text(DATA)
        windows = token_windows(lm.tokenizer, text[: len(text) // 2], args.seq_len, args.windows).numpy()
        calib = token_windows(lm.tokenizer, text[len(text) // 2:], 256, 16)
        source = f"wikitext-2 valid (first half), {args.windows}×{args.seq_len} tokens"
    else:
        rng = np.random.default_rng(0)
        windows = rng.integers(3, VOCAB, (args.windows, args.seq_len))
        calib = torch.from_numpy(rng.integers(3, VOCAB, (16, 256)))
        source = f"random token ids, {args.windows}×{args.seq_len}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fam in FAMILIES:
            for mode in ("dense", "uniform", "global"):
                model = tiny_model(fam, vocab=VOCAB, layers=LAYERS.get(fam, 3))
                rows.append(variant(f"tiny-{fam}", model, mode, meta, windows, Path(tmp), args.threads))
                print(json.dumps(rows[-1]), file=sys.stderr)
        for mode in ("dense", "uniform", "global"):
            rows.append(variant("smollm2-135m", lm.model, mode, meta, windows, Path(tmp), args.threads, calib))
            print(json.dumps(rows[-1]), file=sys.stderr)
    out = {"bench": "archs", "command": "python3 bench/archs.py " + " ".join(sys.argv[1:]), "windows": source,
           "prune": "tiny: l2, ratio 0.35, head_unit query, align 32; smollm2-135m: wanda, ratio 0.3, 16x256 "
                    "calibration tokens, align 32 (see each row's prune_config)",
           "host": platform.node(), "seconds": time.perf_counter() - t0, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
