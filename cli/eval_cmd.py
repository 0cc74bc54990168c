"""`adaprune-edge eval`: zero-shot multiple choice, perplexity, KL/top-1 vs a baseline; one table + JSON."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from adaprune_edge import models
from adaprune_edge.evaluate import harness
from adaprune_edge.evaluate import tasks
from adaprune_edge.cli.common import cli_errors, console, err_console
from adaprune_edge.evaluate.divergence import WindowReport, evaluate_windows
from adaprune_edge.errors import ConfigError
from adaprune_edge.evaluate.report import EvalReport
from adaprune_edge.runs import check_writable, write_json


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err_console)


def open_scorer(spec: str, as_gguf: bool, batch_size: int, n_ctx: int, threads: Optional[int]) -> Any:
    """A torch scorer for a model spec, or a llama.cpp scorer for a .gguf file."""
    if as_gguf:
        if not spec.endswith(".gguf"):
            raise ConfigError(f"--gguf expects a .gguf file, got {spec}")
        models.resolve(spec)  # one-line error for a missing file
        return harness.GGUFScorer.open(spec, n_ctx=n_ctx, threads=threads)
    lm = models.load(spec)
    return harness.TorchScorer(lm.model, lm.tokenizer, batch_size=batch_size)


def _check_args(model: Optional[str], gguf: Optional[str], task_list: Optional[str], ppl: Optional[str],
                baseline: Optional[str], limit: Optional[int]) -> list[str]:
    if model and gguf:
        raise ConfigError("give either --model or --gguf, not both")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {limit})")
    if not task_list and not ppl:
        raise ConfigError("nothing to evaluate: give --tasks and/or --ppl FILE")
    if baseline and not ppl:
        raise ConfigError("--baseline needs --ppl FILE: KL and top-1 agreement are measured on its windows")
    return tasks.parse_names(task_list) if task_list else []


def _run_tasks(scorer: Any, loaded: list[tasks.TaskData], limit: Optional[int], seed: int) -> list[harness.TaskResult]:
    results = []
    with _progress() as bar:
        for data in loaded:
            docs = tasks.subset(data.docs, limit, seed)
            job = bar.add_task(f"{data.task} ({len(docs)})", total=harness.n_requests(docs))
            spec = tasks.TASKS.get(data.task)
            results.append(harness.evaluate_task(scorer, data, limit, seed, lambda k, j=job: bar.advance(j, k),
                                                 has_acc_norm=spec.has_acc_norm))
    return results


def _run_windows(scorer: Any, ppl: str, seq_len: int, windows: Optional[int], reference: Any,
                 reference_name: Optional[str]) -> WindowReport:
    from adaprune_edge.evaluate.perplexity import read_text, token_windows

    wins = token_windows(scorer.tokenizer, read_text(ppl), seq_len, windows)
    label = f"perplexity{' + KL' if reference is not None else ''} ({wins.shape[0]}x{seq_len})"
    with _progress() as bar:
        job = bar.add_task(label, total=wins.shape[0])
        return evaluate_windows(scorer, wins, reference, reference_name, lambda k: bar.advance(job, k))


def _fmt(x: Optional[float], digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report_table(rep: EvalReport) -> Table:
    """One table: per task acc/acc_norm with stderr, then perplexity and divergence."""
    table = Table(title=f"{rep.model}  ({rep.backend})")
    for col, kw in (("metric", {"style": "bold"}), ("value", {"justify": "right"}), ("± stderr", {"justify": "right"}),
                    ("n", {"justify": "right"}), ("s / 100 ex.", {"justify": "right"}), ("source", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for t in rep.tasks:
        per100 = f"{100 * t.seconds / t.n:.1f}"
        table.add_row(f"{t.task} acc", _fmt(t.acc), _fmt(t.acc_stderr), str(t.n), per100, t.source)
        if t.acc_norm is not None:
            table.add_row(f"{t.task} acc_norm", _fmt(t.acc_norm), _fmt(t.acc_norm_stderr), str(t.n), "", "")
    w = rep.windows
    if w is not None:
        shape = f"{w.n_windows}x{w.seq_len}"
        table.add_row(f"perplexity ({shape})", _fmt(w.ppl, 3), "", str(w.n_tokens), "", rep.ppl_data or "")
        if w.reference is not None:
            table.add_row("baseline perplexity", _fmt(w.ppl_ref, 3), "", str(w.n_tokens), "", w.reference)
            table.add_row("KL vs baseline (nats/token)", _fmt(w.kl_mean, 5), _fmt(w.kl_stderr, 5), str(w.n_tokens), "",
                          f"median {_fmt(w.kl_median, 5)}, p99 {_fmt(w.kl_p99, 4)}, max {_fmt(w.kl_max, 3)}")
            table.add_row("top-1 agreement", f"{100 * w.top1_agreement:.2f}%", "", str(w.n_tokens), "", "")
    return table


@cli_errors
def eval_cmd(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Torch model: 'default', an HF or pruned folder, a .gguf (dequantized), or a hub id. Default: 'default'."),
    gguf: Optional[str] = typer.Option(None, "--gguf", help="Evaluate this .gguf file with llama.cpp (its own tokenizer) instead of a torch model."),
    task_list: Optional[str] = typer.Option(None, "--tasks", "-t", help=f"Comma-separated multiple-choice tasks: {', '.join(tasks.TASKS.names())}."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder with the tasks' upstream files (e.g. piqa/valid.jsonl + valid-labels.lst, arc/ARC-Easy-Dev.jsonl). Without it, hub datasets are used when online."),
    ppl: Optional[str] = typer.Option(None, "--ppl", "--data", help="Text file: perplexity on non-overlapping token windows (no BOS)."),
    seq_len: int = typer.Option(512, "--seq-len", min=8, help="Tokens per perplexity window."),
    windows: Optional[int] = typer.Option(None, "--windows", min=1, help="Use only the first N windows of --ppl (default: all)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score a fixed seeded subset of N examples per task (default: all)."),
    seed: int = typer.Option(1234, "--seed", help="Seed of the --limit subset."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Dense/reference model (spec or .gguf) for KL divergence and top-1 agreement on the --ppl windows."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences per torch forward pass."),
    n_ctx: int = typer.Option(2048, "--n-ctx", min=64, help="llama.cpp context for GGUF scoring (longer inputs are truncated on the left, as lm-eval does)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="llama.cpp threads (default: all cores)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report as JSON here (read by `compare`)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
) -> None:
    """Zero-shot accuracy (lm-eval-harness acc / acc_norm), perplexity, and KL / top-1 vs a baseline."""
    names = _check_args(model, gguf, task_list, ppl, baseline, limit)
    if out is not None:
        check_writable(out, force)
    loaded = [tasks.load(n, data_dir) for n in names]  # data errors before any model is loaded
    if ppl:
        from adaprune_edge.evaluate.perplexity import read_text

        read_text(ppl)
    t0 = time.perf_counter()
    spec = gguf or model or "default"
    with console.status(f"loading {spec} ..."):
        scorer = open_scorer(spec, bool(gguf), batch_size, max(n_ctx, seq_len), threads)
        reference = None
        if baseline:
            reference = open_scorer(baseline, baseline.endswith(".gguf"), batch_size, max(n_ctx, seq_len), threads)
    results = _run_tasks(scorer, loaded, limit, seed)
    wreport = _run_windows(scorer, ppl, seq_len, windows, reference, baseline) if ppl else None
    settings = {"limit": limit, "seed": seed, "seq_len": seq_len, "windows": windows, "batch_size": batch_size,
                "data_dir": str(data_dir) if data_dir else None, "baseline": baseline}
    rep = EvalReport(spec, scorer.name, tuple(results), wreport, ppl, settings, time.perf_counter() - t0)
    console.print(report_table(rep))
    if out is not None:
        write_json(out, rep.to_dict())
        console.print(f"wrote {out}")
    for s in (scorer, reference):
        if s is not None and hasattr(s, "close"):
            s.close()
