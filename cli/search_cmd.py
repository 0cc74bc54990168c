"""`adaprune-edge search`: SMAC search over calibration, metric and allocation under a device budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.live import Live
from rich.table import Table

from adaprune_edge.cli.common import budget_options, cli_errors, console, recipe_or, say_uniform_only
from adaprune_edge.cli.sampling_bar import sampling_bar
from adaprune_edge.search.trials import TrialRecord

DEVICE_HELP = "Device profile: a shipped name (see `devices list`) or a path to a .yaml profile."


def _ratio(r: TrialRecord) -> float:
    """The trial's solved ratio (older runs: the searched one)."""
    return r.solved_ratio if r.solved_ratio is not None else r.values.get("ratio", 0.0)


def trial_table(records: list[TrialRecord], title: str, limit: int = 12) -> Table:
    """Latest trials (or the top ones) with the best-so-far marked."""
    best = min((r.cost for r in records if r.feasible), default=None)
    t = Table(title=title)
    for col in ("#", "recipe", "ratio", "ms/tok (pred)", "val loss", "ppl", "status", "s"):
        t.add_column(col, no_wrap=col != "recipe")
    for r in records[-limit:]:
        mark = "[bold green]★[/] " if best is not None and r.feasible and r.cost == best else ""
        t.add_row(str(r.index), mark + r.summary(), f"{_ratio(r):.3f}",
                  f"{r.decode_ms:.2f}" if r.decode_ms != float("inf") else "-",
                  f"{r.loss:.4f}" if r.loss is not None else "-", f"{r.ppl:.2f}" if r.ppl else "-",
                  r.status if r.feasible else f"[red]{r.status}[/]", f"{r.seconds:.0f}")
    return t


def top_table(records: list[TrialRecord], n: int = 5) -> Table:
    ok = sorted((r for r in records if r.feasible), key=lambda r: r.cost)[:n]
    return trial_table(ok, f"top {len(ok)} of {len(records)} trials (lowest held-out loss)", limit=n)


def rescored_table(outcome) -> Table:
    """The re-scored top trials: cost on their own objective windows, on the re-scoring windows, combined."""
    t = Table(title="top trials re-scored on more held-out windows (lowest combined loss is chosen)")
    for col in ("trial", "recipe", "trials' windows", "re-scoring windows", "combined", "s"):
        t.add_column(col)
    recs = {r.index: r for r in outcome.records}
    for r in sorted(outcome.rescored, key=lambda r: r.combined):
        mark = "[bold green]★[/] " if outcome.best is not None and r.index == outcome.best.index else ""
        t.add_row(str(r.index), mark + recs[r.index].summary(), f"{r.cost:.4f} ({r.windows})",
                  f"{r.rescore_cost:.4f} ({r.rescore_windows})", f"{r.combined:.4f}", f"{r.seconds:.0f}")
    return t


@cli_errors
@budget_options
def search_cmd(
    limits: Any,
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    model: str = typer.Option("default", "--model", "-m", help="'default', a local HF folder, a .gguf, or a hub id."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="GGUF quant type the budget applies to (default: the profile's)."),
    trials: int = typer.Option(20, "--trials", "-n", min=1, help="Number of trials (in total, counting resumed ones)."),
    walltime: Optional[float] = typer.Option(None, "--walltime", help="Stop asking for new trials after this many seconds (re-scoring follows)."),
    patience: int = typer.Option(3, "--patience", min=0, help="Stop after this many trials in a row (past the warm starts) that do not beat the best by more than the objective windows' paired noise (2 standard errors of the per-window differences); 0: run every trial."),
    rescore_top: int = typer.Option(3, "--rescore-top", min=0, help="Re-score this many of the best trials on --rescore-windows more held-out windows (after the report's) before choosing one; 0: choose on the trials' own objective windows."),
    rescore_windows: int = typer.Option(8, "--rescore-windows", min=1, help="Held-out windows (of --val-seq-len tokens) that re-score the best trials; fewer when the held-out text has fewer left."),
    calib: List[str] = typer.Option([], "--calib", help="Calibration source (text/JSONL/parquet file, 'builtin:self', 'builtin:pydoc'); repeat for a mix. Default: builtin:self (text sampled from the model, cached)."),
    val: Optional[str] = typer.Option(None, "--val", help="Held-out text for the objective (first windows) and report (next windows). Default: the tail (>= 20% of records) of the first --calib source (calibration then uses the rest)."),
    val_windows: int = typer.Option(8, "--val-windows", min=1, help="Validation windows per trial."),
    val_seq_len: int = typer.Option(512, "--val-seq-len", min=16, help="Tokens per validation window."),
    objective: str = typer.Option("loss", "--objective", help="'loss' (held-out next-token NLL) or 'kl' (KL to the dense model)."),
    facade: str = typer.Option("hpo", "--facade", help="'hpo' (SMAC HPO facade) or 'hyperband' (multi-fidelity: validation windows)."),
    multi_objective: bool = typer.Option(False, "--multi-objective", help="Optimise loss and predicted latency together (ParEGO) for a Pareto front."),
    max_ratio: float = typer.Option(0.6, "--max-ratio", min=0.05, max=0.9, help="Largest share of decoder parameters a trial may remove."),
    max_samples: int = typer.Option(256, "--max-samples", min=8, help="Upper bound of the calibration sample count (searched 8..max, log)."),
    max_seq_len: int = typer.Option(1024, "--max-seq-len", min=64, help="Upper bound of the calibration window length (searched 64..max, log)."),
    warm_start: bool = typer.Option(True, "--warm-start/--no-warm-start", help="Seed the search with published fixed recipes (LLM-Pruner, Wanda-sp, FLAP, taylor + reconstruction), each at its own solved ratio."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel trials on a local dask cluster of this many processes."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Use an existing dask cluster (tcp://host:port) instead of a local one."),
    out: Path = typer.Option(Path("runs/search"), "--out", "-o", help="Run directory (trials.jsonl, trials.csv, search.json, smac/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out without redoing finished trials."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing --out."),
    seed: int = typer.Option(0, "--seed", help="Seed of SMAC and of every trial's sampling."),
    confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="Confirm r_min by a measurement when the device's backend measures."),
    measure_trials: bool = typer.Option(False, "--measure-trials/--predict-trials", help="Check every trial's structure against the budget by measurement (shape-only GGUF, cached; slower, and single measurements vary by a few %) where the backend measures; default: by the roofline calibrated with one measurement. The incumbent is measured either way."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the budget, r_min and the search space, then exit."),
) -> None:
    """Bayesian search (SMAC) over calibration samples, importance metric, aggregation and allocation,
    each trial at the smallest ratio whose structure meets the device budget (solved per recipe on the
    calibrated predictor); every trial's structure is checked against the budget (latency + RAM),
    violators are penalised, never accepted."""
    from adaprune_edge import models
    from adaprune_edge.device import Device
    from adaprune_edge.search.plan import make_plan
    from adaprune_edge.search.spec import SearchSpec
    from adaprune_edge.search.space import build_space
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.pipeline.report import search_cost_line

    budget_ms = limits.decode_ms
    dev = Device.resolve(device, budget=limits)
    profile = dev.profile
    q = recipe_or(quant, profile.quant)
    with console.status(f"loading {model} ..."):
        loaded = models.load(model)
    base = Structure.from_model(loaded.model)
    with console.status("solving the smallest ratio that meets the budget ..."):
        plan = make_plan(base, dev, q, budget_ms, max_ratio, confirm,
                         max_samples=max_samples, max_seq_len=max_seq_len)
    spec = SearchSpec.from_plan(plan, dev, model, calib=tuple(calib), val=val, val_windows=val_windows,
                                val_seq_len=val_seq_len, objective=objective, facade=facade,
                                multi_objective=multi_objective, warm_start=warm_start, budget_ms=budget_ms,
                                measure_trials=measure_trials and dev.measures, n_trials=trials,
                                walltime_s=walltime, workers=workers, seed=seed, rescore_top=rescore_top,
                                rescore_windows=rescore_windows, patience=patience)
    spec.check()
    print_plan(plan, spec)
    if dry_run:
        console.print(str(build_space(spec.bounds, seed)))
        say_uniform_only(spec)
        console.print(f"would write: {out}/search.json, trials.jsonl, trials.csv, rescored.jsonl, smac/")
        return
    outcome = _run(spec, out, resume, force, workers, scheduler, loaded)
    console.print(top_table(outcome.records))
    if outcome.rescored:
        console.print(rescored_table(outcome))
    console.print(search_cost_line(outcome.cost()))
    _final(outcome, dev, q)


def print_plan(plan, spec) -> None:
    s = plan.solution
    console.print(f"[bold]{plan.device}[/] {plan.quant}: dense predicted {plan.dense.decode_ms_per_token:.2f} ms/token; "
                  f"budget {plan.budget_ms} ms/token → r_min {plan.r_min:.1%} of decoder parameters "
                  f"(uniform: {s.structure.condensed()}; {s.reason})"
                  + (f"; measured {s.measured.decode_ms_per_token:.2f} ms/token" if s.measured else ""))
    console.print(f"each trial solves its own ratio (up to {plan.bounds.r_max:.3f}), {spec.n_trials} trials, "
                  f"objective {spec.objective}, facade {spec.facade}")


def _run(spec, out: Path, resume: bool, force: bool, workers: int, scheduler: Optional[str], loaded):
    from adaprune_edge.search.cluster import dask_client
    from adaprune_edge.search.evaluators import DaskEvaluator, LocalEvaluator
    from adaprune_edge.search.objective import SearchContext
    from adaprune_edge.search.run import run_search

    with sampling_bar() as step:  # calibration/objective data first (builtin:self samples once per model)
        sctx = SearchContext(spec, loaded, progress=step)
    with Live(trial_table([], "trials"), console=console, refresh_per_second=2, transient=False) as live:
        def on_trial(rec: TrialRecord, records: list[TrialRecord]) -> None:
            live.update(trial_table(records, f"trials ({len(records)}/{spec.n_trials})"))

        if workers > 1 or scheduler:
            with dask_client(workers, scheduler) as client:
                return run_search(spec, out, resume=resume, force=force,
                                  evaluator=DaskEvaluator(spec, client), on_trial=on_trial)
        ev = LocalEvaluator(spec, sctx)
        return run_search(spec, out, resume=resume, force=force, evaluator=ev, on_trial=on_trial)


def _final(outcome, dev, quant) -> None:
    best = outcome.best
    if best is None:
        console.print("[red]no trial met the budget[/]: raise --trials or --max-ratio")
        return
    console.print(f"best: trial {best.index} {best.summary()} ratio {_ratio(best):.3f}: held-out loss "
                  f"{best.loss:.4f} (ppl {best.ppl:.2f}), {best.decode_ms:.2f} ms/token on {dev.name} (screening)")
    rep = dev.latency_of(best.structure, quant)  # the incumbent is always re-measured where the backend measures
    if rep.measured:
        console.print(f"measured with {rep.tool or rep.backend}: {rep.decode_ms_per_token:.2f} ms/token decode, "
                      f"{rep.prefill_tps:.0f} tok/s prefill")
