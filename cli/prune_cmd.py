"""`adaprune-edge prune`: structurally prune a model with calibration data and save it (safetensors + structure.json)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaprune_edge.cli.common import cli_errors, console, err_console, human_count
from adaprune_edge.cli.sampling_bar import sampling_bar
from adaprune_edge.data.calibration import STRATEGIES
from adaprune_edge.errors import ConfigError
from adaprune_edge.prune.allocation import ALLOCATIONS
from adaprune_edge.prune.importance import AGGREGATIONS, METRICS

RANGE_HELP = "Use only this share of each calibration source's records, START:STOP in [0, 1] (e.g. 0:0.5 to keep the rest for evaluation)."


def _parse_range(text: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"--calib-range must look like START:STOP (e.g. 0:0.5), got {text!r}") from None
    return a, b


def _check_ratio(ratio: float) -> None:
    from adaprune_edge.prune.engine import MAX_RATIO

    if not 0.0 < ratio <= MAX_RATIO:
        raise ConfigError(f"--ratio must be in (0, {MAX_RATIO}], got {ratio}")


def _save_atomically(model, tokenizer, out: Path, recipe: dict, force: bool) -> None:
    """Write into a temp folder next to `out`, then rename it onto `out` (replacing it only with --force)."""
    from adaprune_edge.archs.slicing import save_pruned
    from adaprune_edge.runs import check_writable

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_pruned(model, tokenizer, tmp, recipe)
        check_writable(out, force)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(res, out: Path, sources: list[str], seconds: float) -> Table:
    t = Table(title=f"pruned → {out}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    c = res.config
    rows = [
        ("recipe", f"{c.metric}/{c.aggregation}, {c.allocation}, heads by {c.head_unit}, align {c.align}"
                   + (f", depth share {c.depth_share:g}" if c.depth_share else "") + (", bias comp." if c.bias_compensation and not c.reconstruction else "")
                   + (f", least-squares reconstruction (damp {c.recon_damp:g})" if c.reconstruction and c.metric != "obs" else "")
                   + (", OBS update" if c.metric == "obs" else "") + (", sequential" if c.sequential else "")),
        ("calibration", f"{c.n_samples} x {c.seq_len} tokens ({c.sampling}) from {', '.join(sources)}"),
        ("decoder params", f"{human_count(res.decoder_params_before)} → {human_count(res.decoder_params_after)} "
                           f"(-{100 * res.decoder_ratio:.1f}%, asked -{100 * c.ratio:.1f}%)"),
        ("all params", f"{human_count(res.params_before)} → {human_count(res.params_after)} (-{100 * res.total_ratio:.1f}%)"),
        ("layers", f"{res.structure.n_layer} of {res.structure.n_layer_orig}"
                   + (f" (dropped {', '.join(map(str, res.dropped_layers))})" if res.dropped_layers else "")),
        ("per-layer shapes", res.structure.condensed()),
        ("time", f"{seconds:.1f} s (calibration pass {res.timings.get('statistics_s', 0):.1f} s)"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


@cli_errors
def prune_cmd(
    model: str = typer.Option("default", "--model", "-m", help="'default' (embedded SmolLM2-135M-Instruct), a local HF folder, a .gguf file, or a hub id."),
    ratio: float = typer.Option(..., "--ratio", "-r", help="Share of decoder-layer parameters to remove, in (0, 0.9] (embeddings are not pruned)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (safetensors + config + structure.json + tokenizer)."),
    metric: str = typer.Option("taylor", "--metric", help=f"Importance metric: {METRICS.listing()}."),
    aggregation: str = typer.Option("sum", "--aggregation", help=f"How a unit's component scores combine: {AGGREGATIONS.listing()}."),
    allocation: str = typer.Option("global", "--allocation", help=f"Per-layer allocation: {ALLOCATIONS.listing()}."),
    head_unit: str = typer.Option("none", "--head-unit", help="Attention pruning unit: none (FFN and layers only; best measured default), query (heads inside every KV group, all groups equal), group (whole KV groups)."),
    calib: Optional[List[str]] = typer.Option(None, "--calib", help="Calibration text: .txt/.jsonl/.parquet file (repeatable). Default: builtin:self (text sampled from the model itself, cached); builtin:pydoc = Python's help topics."),
    calib_range: str = typer.Option("0:1", "--calib-range", help=RANGE_HELP),
    n_samples: int = typer.Option(64, "--n-samples", min=1, help="Calibration windows."),
    seq_len: int = typer.Option(256, "--seq-len", min=2, help="Tokens per calibration window."),
    sampling: str = typer.Option("random", "--sampling", help=f"Window sampling: {STRATEGIES.listing()}."),
    protect_first: int = typer.Option(0, "--protect-first", min=0, help="Never prune the first N layers."),
    protect_last: int = typer.Option(0, "--protect-last", min=0, help="Never prune the last N layers."),
    depth_share: float = typer.Option(0.0, "--depth-share", help="Share of the removal done by dropping whole layers (block influence), 0..1."),
    bias_compensation: bool = typer.Option(False, "--bias-compensation/--no-bias-compensation", help="FLAP bias compensation for removed channels."),
    reconstruction: bool = typer.Option(False, "--reconstruction/--no-reconstruction", help="Least-squares refit of the output projections' (attn_output/ffn_down) kept columns (and a bias) to the dense outputs on the calibration tokens; one-shot, no training. Subsumes --bias-compensation."),
    recon_damp: float = typer.Option(0.3, "--recon-damp", help="Ridge strength of --reconstruction towards the original weights (relative to the mean input variance; larger = closer to bias compensation only)."),
    align: int = typer.Option(32, "--align", min=1, help="FFN widths stay multiples of this: 256 for K-quants (Q4_K_M...), 32 otherwise, 1 = free."),
    min_keep: float = typer.Option(0.1, "--min-keep", help="Share of heads/channels every pruned layer keeps, in [0, 1)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="Calibration windows per forward/backward pass: 1 peaks at ~2.3 GiB RSS on the default model with 256 tokens, 2 at ~3.0 GiB (same speed on CPU)."),
    sequential: bool = typer.Option(False, "--sequential/--no-sequential", help="Prune layer by layer on the already-pruned model's activations (choice of units and update see earlier layers' errors; holds one layer's statistics at a time)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and the random metric."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Prune whole heads, FFN channels and optionally layers, chosen by an importance metric on calibration text."""
    from adaprune_edge import models
    from adaprune_edge.data.calibration import BUILTIN_DEFAULT, CalibrationPool, read_records
    from adaprune_edge.prune.engine import PruneConfig, check_architecture, prune
    from adaprune_edge.runs import check_writable

    _check_ratio(ratio)
    cfg = PruneConfig(ratio=ratio, metric=metric, aggregation=aggregation, allocation=allocation, head_unit=head_unit,
                      n_samples=n_samples, seq_len=seq_len, sampling=sampling, protect_first=protect_first,
                      protect_last=protect_last, depth_share=depth_share, bias_compensation=bias_compensation,
                      reconstruction=reconstruction, recon_damp=recon_damp, align=align, min_keep=min_keep, seed=seed, batch_size=batch_size, sequential=sequential)
    cfg.validate()
    check_writable(out, force)
    sources = list(calib or [BUILTIN_DEFAULT])
    rng = _parse_range(calib_range)
    for src in sources:  # fail on missing/empty files before the model loads
        if src != "builtin:self":  # sampled from the model: needs it loaded
            read_records(src)
    t0 = time.perf_counter()
    with console.status(f"loading {model} ..."):
        lm = models.load(model)
        check_architecture(lm.model, cfg)
    with sampling_bar() as step:
        pool = CalibrationPool.from_sources(sources, lm.tokenizer, seq_len, rng, loaded=lm, progress=step)
    if not calib:
        err_console.print(f"calibrating on the built-in default ({BUILTIN_DEFAULT}: text sampled from the model itself, "
                          "cached); pass --calib FILE for your domain")
    columns = (TextColumn("[bold]calibration[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("calib", total=min(n_samples, len(pool)))
        res = prune(lm.model, pool, cfg, inplace=True, progress=lambda done, total: bar.update(task, completed=done, total=total))
    recipe = {"model": lm.spec.to_dict(), "calibration": {"sources": sources, "range": list(rng)}, **res.to_dict()}
    with console.status(f"writing {out} ..."):
        _save_atomically(res.model, lm.tokenizer, out, recipe, force)
    console.print(_summary(res, out, sources, time.perf_counter() - t0))
