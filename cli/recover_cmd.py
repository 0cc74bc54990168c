"""`adaprune-edge recover`: distil a pruned model from its dense teacher (bounded in tokens and minutes,
resumable) and save it in the folder format `prune` writes, so `export --model DIR` reads it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaprune_edge.cli.common import cli_errors, console, err_console, human_count
from adaprune_edge.cli.prune_cmd import _parse_range
from adaprune_edge.cli.sampling_bar import sampling_bar
from adaprune_edge.errors import ConfigError

WORK = ".recover-work"  # checkpoint folder next to --out (removed once --out is written)


def _summary(res, ts, out: Path, before: Optional[float], after: Optional[float], eval_name: str) -> Table:
    t = Table(title=f"recovered → {out}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    rows = [("training text", f"{ts.source} ({ts.part}): {ts.windows}x{ts.seq_len} = {ts.tokens} tokens"),
            ("trained", f"{res.tokens} tokens ({res.epochs:.2f} epochs), {res.steps} steps, stopped by {res.stopped}"),
            ("what trained", f"{res.config['train']}: {human_count(res.trainable_params)} parameters"),
            ("speed", f"{res.tokens_per_s:.0f} tokens/s on {res.device}" + (" (bf16 autocast)" if res.bf16 else " (fp32)")
             + f", {res.seconds / 60:.1f} min"),
            ("KL to teacher", f"{res.kl_first:.4f} → {res.kl_last:.4f} nats/token (first / last steps)")]
    if before is not None and after is not None:
        rows.append((f"perplexity ({eval_name})", f"{before:.2f} → {after:.2f} ({100 * (after / before - 1):+.1f}%)"))
    for k, v in rows:
        t.add_row(k, v)
    return t


@cli_errors
def recover_cmd(
    model: str = typer.Option(..., "--model", "-m", help="The pruned model: a folder written by `prune` (or any model spec)."),
    teacher: str = typer.Option("default", "--teacher", help="The dense model it was pruned from (same tokenizer): 'default', a folder, a .gguf or a hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (same format as `prune` writes; `export --model` reads it)."),
    text: Optional[List[str]] = typer.Option(None, "--text", help="Training text: .txt/.jsonl/.parquet file or builtin:self (repeatable). Default builtin:self: the teacher's own text, sampled with another seed than calibration's. Keep it apart from your evaluation text."),
    text_range: str = typer.Option("0:1", "--text-range", help="Use only this share of each file's records, START:STOP in [0, 1] (e.g. 0:0.5 to evaluate on the rest)."),
    self_tokens: int = typer.Option(40960, "--self-tokens", min=256, help="Tokens of builtin:self to sample (about 100 tokens/s with llama.cpp on 2 cores; cached per model and seed)."),
    tokens: int = typer.Option(0, "--tokens", min=0, help="Stop after this many training tokens (0 = no token bound)."),
    minutes: float = typer.Option(0.0, "--minutes", min=0.0, help="Stop after this many minutes of training (0 = no time bound). At least one bound is required."),
    train: str = typer.Option("decoder", "--train", help="What trains: decoder (all decoder weights; the tied embedding stays the teacher's), all, norms (norms and biases), lora (adapters merged back into the weights)."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate (constant after a 5-step warm-up)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature of the KL (loss scaled by T^2)."),
    ce_weight: float = typer.Option(0.0, "--ce-weight", help="Share of next-token cross-entropy in the loss, 0..1 (0 = logits only)."),
    top_k: int = typer.Option(64, "--top-k", min=1, help="Teacher log-probs kept per token (the rest of the vocabulary is one bucket)."),
    lora_rank: int = typer.Option(16, "--lora-rank", min=1, help="LoRA rank with --train lora."),
    freeze_first: int = typer.Option(0, "--freeze-first", min=0, help="Keep the first N layers frozen (no backward through them: faster)."),
    seq_len: int = typer.Option(256, "--seq-len", min=16, help="Tokens per training window."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Windows per step."),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bf16 autocast where the hardware has it (CUDA, CPUs with AVX512-BF16/AMX); weights stay fp32."),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="Text file to report perplexity on before and after (never train on it)."),
    eval_windows: int = typer.Option(8, "--eval-windows", min=1, help="Windows of --eval (512 tokens each)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order and of builtin:self sampling."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint a killed run left next to --out."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out and start over."),
) -> None:
    """Recover quality after pruning: distil the pruned model from the dense one (KL to its logits)."""
    from adaprune_edge import models
    from adaprune_edge.cli.prune_cmd import _save_atomically
    from adaprune_edge.evaluate.perplexity import perplexity, read_text, token_windows
    from adaprune_edge.recover.config import RecoverConfig
    from adaprune_edge.recover.distill import recover
    from adaprune_edge.recover.text import recovery_windows
    from adaprune_edge.runs import check_writable

    cfg = RecoverConfig(train=train, lr=lr, temperature=temperature, ce_weight=ce_weight, top_k=top_k,
                        lora_rank=lora_rank, freeze_first=freeze_first, seq_len=seq_len, batch_size=batch_size,
                        max_tokens=tokens, max_minutes=minutes, bf16=bf16, seed=seed).validate()
    check_writable(out, force)
    work = out.parent / f"{WORK}-{out.name}"
    if work.exists() and not resume:
        if not force:
            raise ConfigError(f"{work} holds a killed recovery's checkpoint: pass --resume to continue it or --force to start over")
        shutil.rmtree(work)
    eval_text = read_text(eval_file) if eval_file else None
    with console.status(f"loading {model} and {teacher} ..."):
        student, dense = models.load(model), models.load(teacher)
    with sampling_bar() as step:
        windows, ts = recovery_windows(list(text or []), dense, seq_len, seed, self_tokens, _parse_range(text_range), step)
    ev = token_windows(dense.tokenizer, eval_text, 512, eval_windows) if eval_text else None
    before = perplexity(student.model, ev) if ev is not None else None
    t0 = time.perf_counter()
    columns = (TextColumn("[bold]recover[/]"), BarColumn(), TextColumn("{task.completed} tokens"),
               TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("recover", total=tokens or None, note="")
        res = recover(student.model, dense.model, windows, cfg, work,
                      progress=lambda d, t, note: bar.update(task, completed=d, note=note))
    after = perplexity(student.model, ev) if ev is not None else None
    recipe = _recipe(student, teacher, res, ts, before, after, eval_file)
    with console.status(f"writing {out} ..."):
        _save_atomically(student.model, student.tokenizer or dense.tokenizer, out, recipe, force or resume)
    shutil.rmtree(work, ignore_errors=True)
    console.print(_summary(res, ts, out, before, after, str(eval_file)))
    console.print(f"took {time.perf_counter() - t0:.0f} s; export with: adaprune-edge export --model {out} --out model.gguf")


def _recipe(student, teacher: str, res, ts, before, after, eval_file) -> dict:
    """The pruned folder's recipe with a `recovery` entry (what trained, on what, how long, with what result)."""
    from adaprune_edge.archs.slicing import read_recipe

    return {**read_recipe(student.spec.path), "recovery": {"teacher": teacher, "text": ts.to_dict(), **res.to_dict(),
                                "eval": {"file": str(eval_file), "ppl_before": before, "ppl_after": after} if eval_file else None}}
