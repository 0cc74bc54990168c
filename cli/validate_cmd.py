"""`adaprune-edge validate`: score a GGUF in llama-cpp-python on the same token ids as torch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaprune_edge import models
from adaprune_edge.evaluate import validation
from adaprune_edge.cli.common import cli_errors, console, err_console, fail, human_bytes
from adaprune_edge.errors import ExportError
from adaprune_edge.evaluate.perplexity import read_text, token_windows
from adaprune_edge.runs import check_writable, write_json


def _tokenizer(torch_spec: Optional[str], gguf_path: Path) -> tuple[object, object]:
    """(torch model or None, HF tokenizer): from --torch, else the HF tokenizer transformers builds from the GGUF."""
    if torch_spec:
        lm = models.load(torch_spec)
        return lm.model, lm.tokenizer
    from transformers import AutoTokenizer

    try:
        return None, AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as e:  # transformers raises many kinds for a GGUF it cannot read
        raise ExportError(f"cannot build an HF tokenizer from {gguf_path} ({type(e).__name__}); pass --torch") from None


def _table(r: validation.ValidationReport) -> Table:
    t = Table(title=f"validation of {r.gguf} ({r.file_type}, {r.windows}x{r.seq_len} tokens)", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    rows = [("GGUF perplexity", f"{r.ppl:.4f}")]
    if r.torch_ppl is not None:
        rows.append(("torch perplexity", f"{r.torch_ppl:.4f}  (GGUF {r.ppl_rel_diff_vs_torch:+.3%})"))
    if r.reference:
        rows += [("reference", r.reference), ("reference perplexity", f"{r.reference_ppl:.4f}"),
                 ("KL(ref‖gguf) mean", f"{r.kl_mean:.5f} nats/token (worst window {r.kl_max_window:.5f})"),
                 ("top-1 agreement", f"{r.top1:.2%}")]
    if r.speed:
        rows += [("prefill", f"{r.speed.prefill_tps:.1f} tok/s ({r.speed.threads} threads)"),
                 ("decode", f"{r.speed.decode_tps:.1f} tok/s")]
    rows += [("peak RSS (process)", human_bytes(r.peak_rss_bytes)), ("generation", repr(r.generation))]
    if r.tokenizer_agreement is not None:
        rows.append(("tokenizer agreement", f"{r.tokenizer_agreement:.1%}"))
    gate = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "n/a (needs --torch and an F16/F32 GGUF)"}[r.passed]
    rows.append(("gate: F16 PPL within 1% of torch", gate))
    for k, v in rows + [("note", n) for n in r.notes]:
        t.add_row(k, v)
    return t


@cli_errors
def validate_cmd(
    gguf: Path = typer.Option(..., "--gguf", "-g", help="The GGUF to validate."),
    data: Path = typer.Option(..., "--data", "-d", help="Plain-text evaluation file (e.g. ../shared/data/wikitext-2/valid.txt)."),
    torch_spec: Optional[str] = typer.Option(None, "--torch", help="Torch model (folder or spec, e.g. a pruned folder or 'default'): its tokenizer defines the token ids; the gate compares against it."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Reference GGUF (e.g. the F16 export) for KL and top-1; default: the torch model."),
    windows: int = typer.Option(8, "--windows", min=1, help="Number of token windows."),
    seq_len: int = typer.Option(512, "--seq-len", min=16, help="Tokens per window."),
    threads: int = typer.Option(2, "--threads", min=1, help="llama.cpp threads for scoring and speed."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSON report path (default: <gguf stem>.validation.json next to the GGUF)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing JSON report."),
) -> None:
    """Perplexity, KL / top-1 vs a reference, greedy generation, tokens/s and peak RSS of a GGUF; exit 1 if the gate fails."""
    if not gguf.is_file():
        fail(f"GGUF file {gguf} not found")
    if reference is not None and not reference.is_file():
        fail(f"reference GGUF {reference} not found")
    out = out or gguf.with_name(f"{gguf.stem}.validation.json")
    check_writable(out, force)
    text = read_text(data)
    with console.status("loading models ..."):
        model, tok = _tokenizer(torch_spec, gguf)
    wins = token_windows(tok, text, seq_len, windows).numpy().astype(np.int64)
    n_passes = wins.shape[0] * (2 if model is not None and reference is not None else 1)
    columns = (TextColumn("[bold]scoring windows"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("score", total=n_passes)
        report = validation.validate(gguf, wins, torch_model=model, tokenizer=tok, reference_gguf=reference,
                                     threads=threads, sample_text=text[:4000], progress=lambda n: bar.advance(task, n))
    write_json(out, report.to_dict())
    console.print(_table(report))
    console.print(f"JSON: {out}")
    if report.passed is False:
        raise typer.Exit(1)
