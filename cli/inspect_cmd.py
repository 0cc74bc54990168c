"""`adaprune-edge inspect`: architecture, per-layer shapes, size per quant type, optional perplexity."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from adaprune_edge import models
from adaprune_edge.cli.common import cli_errors, console, human_bytes, human_count
from adaprune_edge.quant import FTYPES, QuantRecipe
from adaprune_edge.archs.structure import Structure


@cli_errors
def inspect_cmd(
    model: str = typer.Option("default", "--model", "-m",
                              help="'default' (embedded SmolLM2-135M-Instruct), a local HF folder, a .gguf file, or a hub id."),
    ppl: Optional[str] = typer.Option(None, "--ppl", help="Text file: also report perplexity on it (torch, no BOS)."),
    windows: int = typer.Option(8, "--windows", min=1, help="Number of windows for --ppl."),
    seq_len: int = typer.Option(512, "--seq-len", min=8, help="Tokens per window for --ppl."),
) -> None:
    """Describe a model: architecture, per-layer shapes, parameters, estimated GGUF size per quant type; for a
    .gguf also the ggml types its tensors really have, per role."""
    with console.status(f"loading {model} ..."):
        lm = models.load(model)
    info, st = lm.info, Structure.from_model(lm.model)
    table = Table(title=f"{model}  ({lm.spec.kind}: {lm.spec.path})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [("architecture", info.architecture), ("layers", str(info.n_layer)), ("hidden", str(info.hidden)),
            ("heads / KV heads", f"{info.n_head} / {info.n_head_kv}"), ("head_dim", str(info.head_dim)),
            ("FFN", str(info.n_ff)), ("vocab", str(info.vocab)), ("tied embeddings", str(info.tied_embeddings)),
            ("parameters", f"{human_count(info.params)} ({info.params:,})"),
            ("decoder parameters", f"{human_count(st.decoder_params())} ({st.decoder_params():,})"),
            ("per-layer shapes", st.condensed())]
    for quant in map(QuantRecipe, FTYPES):
        fb, n = len(st.fallbacks(quant)), st.params()
        bpw = 8 * st.gguf_bytes(quant) / n
        rows.append((f"GGUF {quant}", f"{human_bytes(st.gguf_bytes(quant))}, {bpw:.2f} bits/weight"
                     + (f"  ({fb} tensors fall back)" if fb else "")))
    if lm.spec.kind == "gguf":  # what the file really holds (the model above is dequantized)
        from adaprune_edge.exporters.quantize import type_mix

        rows += [(f"tensors {role}", f"{kind} x{n}, {human_bytes(size)}") for role, kind, n, size in type_mix(lm.spec.path)]
    for k, v in rows:
        table.add_row(k, v)
    if ppl:
        from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows

        wins = token_windows(lm.tokenizer, read_text(ppl), seq_len, windows)
        with console.status(f"perplexity on {wins.shape[0]} x {seq_len} tokens ..."):
            value = perplexity(lm.model, wins)
        table.add_row(f"perplexity ({wins.shape[0]}x{seq_len})", f"{value:.3f}")
    console.print(table)
