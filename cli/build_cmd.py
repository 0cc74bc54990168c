"""`adaprune-edge build`: the whole pipeline in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaprune_edge.cli.common import budget_options, cli_errors, console, recipe, say_uniform_only
from adaprune_edge.pipeline import quant_options

DEVICE_HELP = "Device profile: a shipped name (see `devices list`) or a path to a .yaml profile."


def summary_table(rep: dict) -> Table:
    from adaprune_edge.pipeline.report import summary_rows

    t = Table(title=f"{rep['model']} → {rep['device']} ({rep['quant']})")
    for col in ("", "dense", "quantize only", "shipped", "note"):
        t.add_column(col, overflow="fold")
    for row in summary_rows(rep):
        t.add_row(*row)
    return t


def candidates_table(rep: dict) -> Table:
    """The dense candidates scored on the objective windows: uniform recipes and the allocation, side by side."""
    from adaprune_edge.pipeline.report import candidate_rows

    t = Table(title="dense candidates (objective windows; KL to the dense model)")
    for col in ("recipe", "kind", "MB", "decode ms", "meets budget", "PPL", "KL"):
        t.add_column(col, overflow="fold")
    for row in candidate_rows(rep):
        t.add_row(*row)
    return t


def _hooks(progress: Progress, trials: int):
    from adaprune_edge.pipeline.build import Hooks

    tasks: dict[str, int] = {}

    def stage(name: str, status: str) -> None:
        progress.console.print(f"[bold]{name}[/]: {status}")

    def step(stage_name: str, done: int, total: int, note: str) -> None:
        key = f"{stage_name}:{note}" if total == 0 else stage_name
        if key not in tasks:
            tasks[key] = progress.add_task(f"{stage_name} {note}", total=total or None)
        if total:
            progress.update(tasks[key], completed=done, total=total, description=f"{stage_name} {note}")
        else:
            progress.advance(tasks[key], done)

    def trial(rec, records) -> None:
        if "search" not in tasks:
            tasks["search"] = progress.add_task("search trials", total=trials)
        best = min((r.ppl for r in records if r.feasible and r.ppl), default=None)
        progress.update(tasks["search"], completed=len(records),
                        description=f"search trials (best PPL {best:.2f})" if best else "search trials")

    return Hooks(stage=stage, progress=step, trial=trial)


@cli_errors
@budget_options
def build_cmd(
    limits: Any,
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    model: str = typer.Option("default", "--model", "-m", help="'default' (embedded SmolLM2-135M-Instruct), a local HF folder, a .gguf, or a hub id."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help=f"Force one quant recipe FTYPE[:fb=TYPE][:out=TYPE] (e.g. Q4_K_M, Q4_K_M:fb=IQ4_NL:out=Q5_0). Default: the plan tries {len(quant_options.CANDIDATES)} llama.cpp recipes ({', '.join(r.name for r in quant_options.CANDIDATES)}) and ships the best (quant, pruning) pair that meets the budget; dense quantized if that wins."),
    imatrix: bool = typer.Option(True, "--imatrix/--no-imatrix", help="Give llama.cpp's quantizer an importance matrix computed on the calibration windows."),
    trials: int = typer.Option(20, "--trials", "-n", min=1, help="SMAC trials."),
    patience: int = typer.Option(3, "--patience", min=0, help="Stop after this many trials in a row (past the warm starts) that do not beat the best by more than the objective windows' paired noise (2 standard errors of the per-window differences); 0: run every trial."),
    rescore_top: int = typer.Option(3, "--rescore-top", min=0, help="Re-score this many of the best trials on up to 8 more held-out windows (after the report's) before choosing one; 0: choose on the trials' own objective windows."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel trials on a local dask cluster."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Existing dask scheduler tcp://host:port."),
    calib: List[str] = typer.Option([], "--calib", help="Calibration source(s) (text/JSONL/parquet, 'builtin:self', 'builtin:pydoc'). Default: builtin:self (text sampled from the model itself, cached per model)."),
    val: Optional[str] = typer.Option(None, "--val", help="Held-out text: its first --val-windows windows are the search objective, the next ones the report's. Default: the tail (>= 20% of records) of the first --calib source."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Folder with zero-shot task files (piqa/, arc/ ...) and wikitext-2/valid.txt, ptb/ptb.valid.txt (general-text PPL, dense vs shipped); omitted = neither."),
    tasks: str = typer.Option("piqa,arc_easy", "--tasks", help="Zero-shot tasks for the report (with --data-dir)."),
    eval_limit: int = typer.Option(100, "--eval-limit", min=0, help="Examples per zero-shot task (seeded subset)."),
    max_ratio: float = typer.Option(0.6, "--max-ratio", min=0.05, max=0.9, help="Largest share of decoder parameters to remove."),
    max_samples: int = typer.Option(64, "--max-samples", min=8, help="Upper bound of searched calibration samples."),
    max_seq_len: int = typer.Option(256, "--max-seq-len", min=64, help="Upper bound of searched calibration window length."),
    recover_minutes: float = typer.Option(10.0, "--recover-minutes", min=0.0, help="When pruning ships: distil the pruned model from the dense one for at most this many minutes (about 19k tokens a minute on 2 CPU cores with bf16 autocast, measured; a GPU is used when torch sees one). 0 with no --recover-tokens: no recovery."),
    recover_tokens: int = typer.Option(0, "--recover-tokens", min=0, help="Token bound of the recovery (0 = the minutes bound only)."),
    recover_text: List[str] = typer.Option([], "--recover-text", help="Recovery text (repeatable; files or builtin:self). Default: builtin:self sampled again with another seed than calibration's. Must not be a --calib or --val file."),
    recover_self_tokens: int = typer.Option(40960, "--recover-self-tokens", min=256, help="Tokens of builtin:self recovery text to sample (~100 tokens/s with llama.cpp here; cached per model and seed)."),
    recover_train: str = typer.Option("decoder", "--recover-train", help="What recovery trains: decoder, all, norms, lora (see `recover --help`)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<device>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed build from its last finished stage/trial."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run directory."),
    seed: int = typer.Option(0, "--seed", help="Seed of the search and of every sampling step."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the profile, budget, r_min, search space and planned outputs; prune nothing."),
) -> None:
    """Ship the best GGUF that meets a device's latency budget: candidates (every quant recipe's latency,
    the pruning ratio it needs, its measured llama.cpp perplexity) → plan (quantization alone, or pruning
    at the recipe that can beat it) → SMAC search → prune → recover (distil from the dense model) → export
    F16 + quantize (imatrix) → validate
    (parity gate, PPL, KL, zero-shot, generation, latency, RAM) → runs/<name>/ with model-<recipe>.gguf,
    Modelfile, report.json/.md (always with the best quantize-only file beside the shipped one),
    tradeoff.png and the search state. Latency is measured where the profile's backend can (local, ssh)
    and predicted (roofline) otherwise; the report says which."""
    from adaprune_edge.pipeline.build import BuildSpec, run_build

    from adaprune_edge.device import Device

    dev = Device.resolve(device, budget=limits)  # before anything is loaded or written
    profile = dev.profile
    spec = BuildSpec(device=device, model=model, budget_ms=limits.decode_ms, ttft_s=limits.ttft_s,
                     prompt_tokens=limits.prompt_tokens, context=limits.context_length, ram_share=limits.ram_share,
                     ram_mb=limits.ram_mb, kv_cache=limits.kv_cache, quant=recipe(quant) if quant else None, trials=trials, rescore_top=rescore_top, patience=patience, workers=workers,
                     scheduler=scheduler, seed=seed, calib=tuple(calib), val=val, data_dir=data_dir,
                     tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()), eval_limit=eval_limit,
                     max_ratio=max_ratio, max_samples=max_samples, max_seq_len=max_seq_len, imatrix=imatrix,
                     recover_minutes=recover_minutes, recover_tokens=recover_tokens, recover_text=tuple(recover_text),
                     recover_self_tokens=recover_self_tokens, recover_train=recover_train)
    from adaprune_edge.pipeline.recover_stage import recover_config
    from adaprune_edge.recover.text import check_disjoint

    if recover_minutes or recover_tokens:  # bad recovery options fail before anything is loaded
        recover_config(spec).validate()
        check_disjoint(spec.recover_text, spec.calib, spec.val)
    out = out or Path("runs") / profile.name
    if dry_run:
        _dry_run(spec, dev, out)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        rep = run_build(spec, out, resume=resume, force=force, hooks=_hooks(progress, trials), device=dev)
    console.print(summary_table(rep))
    console.print(candidates_table(rep))
    console.print(f"decision: {rep.get('decision')}")
    console.print(f"wrote {out}/: {Path(rep['gguf']).name}, Modelfile, report.json, report.md, tradeoff.png"
                  + (", trials.csv" if rep["trials"] else ""))


def _limits(profile, budget_ms) -> str:
    """The stated limits in force, in the user's units."""
    return (f"{profile.budget.describe(budget_ms)}; RAM <= {profile.usable_ram_bytes / 2**20:.0f} MiB at a "
            f"{profile.context_length}-token context")


def _dry_run(spec, dev, out: Path) -> None:
    from adaprune_edge import models
    from adaprune_edge.cli.search_cmd import print_plan
    from adaprune_edge.pipeline.build import planned_outputs
    from adaprune_edge.search.plan import make_plan
    from adaprune_edge.search.spec import SearchSpec
    from adaprune_edge.search.space import build_space
    from adaprune_edge.archs.structure import Structure

    profile = dev.profile
    console.print_json(data=profile.to_dict())
    with console.status(f"loading {spec.model} ..."):
        base = Structure.from_model(models.load(spec.model).model)
    names = quant_options.recipes(spec.quant, spec.imatrix)
    opts = quant_options.options(base, dev, names, spec.budget_ms, spec.max_ratio, measure=False)
    t = Table(title="quant recipes (predicted; the build measures perplexity of the promising ones)")
    for col in ("recipe", "bits/weight", "tensor MB", "dense decode ms/token", "dense prompt tok/s",
                "tightest limit, dense", "decoder share to prune"):
        t.add_column(col)
    for o in opts:
        need = "unreachable" if o.r_min is None else ("0 (quantization alone)" if o.quant_only else f"{o.r_min:.1%}")
        t.add_row(o.recipe.name, f"{o.bits_per_weight:.2f}", f"{o.file_bytes / 1e6:.1f}", f"{o.decode_ms:.2f}",
                  f"{o.prefill_tps:.0f}", o.binding, need)
    console.print(t)
    console.print("limits: " + _limits(profile, spec.budget_ms), highlight=False)
    prunable = sorted((o for o in opts if o.r_min), key=lambda o: o.r_min)
    if prunable:
        q = prunable[0].recipe
        with console.status("solving the smallest ratio that meets the budget ..."):
            plan = make_plan(base, dev, q, spec.budget_ms, spec.max_ratio,
                             max_samples=spec.max_samples, max_seq_len=spec.max_seq_len)
        sspec = SearchSpec.from_plan(plan, dev, spec.model, n_trials=spec.trials)
        console.print(f"if pruning wins, e.g. at {q}:")
        print_plan(plan, sspec)
        console.print(str(build_space(sspec.bounds, spec.seed)))
        say_uniform_only(sspec)
    console.print(f"would write to {out}/: " + ", ".join(planned_outputs(spec, "<recipe>")))
