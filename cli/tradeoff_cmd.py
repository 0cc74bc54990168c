"""`adaprune-edge tradeoff`: latency vs perplexity over pruning ratios, for one or several devices."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaprune_edge.cli.common import budget_options, cli_errors, console, recipes
from adaprune_edge.cli.sampling_bar import sampling_bar
from adaprune_edge.prune.allocation import ALLOCATIONS
from adaprune_edge.prune.importance import METRICS
from adaprune_edge.runs import atomic_path, check_writable, write_json


@cli_errors
@budget_options
def tradeoff_cmd(
    limits: Any,
    device: str = typer.Option(..., "--device", "-d", help="Device profile whose budget line and chosen point are drawn."),
    devices: Optional[str] = typer.Option(None, "--devices", help="More devices (comma-separated) on the same figure; predicted where not measurable."),
    model: str = typer.Option("default", "--model", "-m", help="Model spec."),
    ratios: str = typer.Option("0,0.1,0.2,0.3,0.4,0.5,0.6", "--ratios", help="Comma-separated shares of decoder parameters to remove."),
    from_run: Optional[Path] = typer.Option(None, "--from-run", help="A finished `search`/`build` run: use its best recipe (metric, allocation, calibration ...)."),
    metric: str = typer.Option("taylor", "--metric", help=f"Recipe metric when no --from-run: {METRICS.listing(described=False)}."),
    allocation: str = typer.Option("global", "--allocation", help=f"Recipe allocation when no --from-run: {ALLOCATIONS.listing(described=False)}."),
    calib: List[str] = typer.Option([], "--calib", help="Calibration source(s). Default: builtin:self (text sampled from the model, cached)."),
    val: Optional[str] = typer.Option(None, "--val", help="Held-out text. Default: the tail (>= 20% of records) of the first --calib source."),
    windows: int = typer.Option(8, "--windows", min=1, help="Held-out windows of 512 tokens for perplexity."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="Quant type (default: the device profile's)."),
    quants: str = typer.Option("Q8_0,Q4_K_M,Q4_0,Q4_K_M:fb=IQ4_NL:out=Q5_0,IQ4_XS:out=IQ4_NL", "--quants",
                               help="Dense quant recipes drawn beside the pruned curve with the Pareto front over both ('' = none)."),
    measure: bool = typer.Option(True, "--measure/--predict", help="Measure on devices whose backend can (local/ssh) or predict everywhere."),
    out: Path = typer.Option(Path("runs/tradeoff"), "--out", "-o", help="Folder for tradeoff.png, tradeoff.json, tradeoff.csv."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
) -> None:
    """Sweep one pruning recipe over ratios: held-out perplexity vs decode latency per device, with the
    budget line and the chosen point (lowest perplexity within the budget of --device)."""
    from adaprune_edge import models
    from adaprune_edge.device import Device
    from adaprune_edge.data import textsets
    from adaprune_edge.pipeline import tradeoff
    from adaprune_edge.latency.budget import ffn_align
    from adaprune_edge.data.calibration import BUILTIN_DEFAULT, CalibrationPool
    from adaprune_edge.quant import QuantRecipe

    main = Device.resolve(device, budget=limits)
    profs = [main] + [Device.resolve(d.strip()) for d in (devices or "").split(",") if d.strip()]
    q = QuantRecipe.parse(quant) if quant else main.profile.quant
    rs = tradeoff.parse_ratios(ratios)
    for name in ("tradeoff.png", "tradeoff.json", "tradeoff.csv"):
        check_writable(out / name, force)
    cfg = _recipe(from_run, metric, allocation, ffn_align(q))
    with console.status(f"loading {model} ..."):
        lm = models.load(model)
    sources = list(calib) or [BUILTIN_DEFAULT]
    with sampling_bar() as step:  # held-out windows never overlap the calibration records (textsets.py)
        split = textsets.plan_split(sources[:1], val, 0.2, lm.tokenizer, windows * 512, loaded=lm, progress=step)
        src, rng = split.calib[0]
        pool = CalibrationPool.from_sources([src], lm.tokenizer, cfg.seq_len, rng, loaded=lm, progress=step)
        held, _ = textsets.heldout_windows(split, lm.tokenizer, 512, windows, 0, loaded=lm, progress=step)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("ratios", total=len(rs))
        points = tradeoff.sweep(lm.model, pool, held, cfg, rs, q, profs, measure,
                                lambda d, t: progress.update(task, completed=d))
    budget = main.profile.budget.decode_limit_ms
    out.mkdir(parents=True, exist_ok=True)
    qs = recipes(quants)
    qpoints = []
    if qs:
        from adaprune_edge.exporters import vocab

        with console.status(f"quantizing the dense model: {', '.join(q.name for q in qs)} ..."):
            qpoints = tradeoff.quant_points(lm.model, vocab.for_model(lm, lm.info.vocab), held, qs, profs, out, measure)
    tradeoff.plot(out / "tradeoff.png", points, profs, budget, f"{model}: {cfg.metric}/{cfg.allocation}, {q}", qpoints)
    best = tradeoff.chosen_point(points, main.name, budget)
    write_json(out / "tradeoff.json", {"device": main.name, "quant": q.name, "budget_ms": budget, "recipe": cfg.to_dict(),
                                       "chosen_ratio": best.ratio if best else None,
                                       "points": [p.to_dict() for p in points], "quant_points": qpoints})
    _csv(out / "tradeoff.csv", points, profs)
    console.print(_table(points, profs, best))
    console.print(f"wrote {out}/tradeoff.png, tradeoff.json, tradeoff.csv")


def _recipe(from_run: Optional[Path], metric: str, allocation: str, align: int):
    from adaprune_edge.errors import ConfigError
    from adaprune_edge.prune.engine import PruneConfig
    from adaprune_edge.search.rescore import of_run, ranked
    from adaprune_edge.search.trials import TrialStore

    if from_run is None:
        cfg = PruneConfig(metric=metric, allocation=allocation, align=align)
        cfg.validate()
        return cfg
    folder = from_run / "search" if (from_run / "search" / "trials.jsonl").exists() else from_run
    order = ranked(TrialStore(folder).records(), of_run(folder))  # re-scored best first
    best = order[0] if order else None
    if best is None:
        raise ConfigError(f"{from_run} has no finished trial within budget to take a recipe from")
    return PruneConfig.from_dict(best.prune_config)


def _csv(path: Path, points, profs) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ratio", "decoder_ratio", "params", "ppl"] + [f"{p.name}_ms" for p in profs]
                   + [f"{p.name}_measured" for p in profs])
        for pt in points:
            w.writerow([pt.ratio, round(pt.decoder_ratio, 4), pt.params, round(pt.ppl, 4)]
                       + [round(pt.latency_ms[p.name], 3) for p in profs] + [pt.measured[p.name] for p in profs])


def _table(points, profs, best) -> Table:
    t = Table(title="trade-off")
    for col in ["ratio", "params", "PPL"] + [f"{p.name} ms/tok" for p in profs]:
        t.add_column(col, justify="right")
    for pt in points:
        mark = " ★" if best is not None and pt is best else ""
        t.add_row(f"{pt.ratio:g}{mark}", f"{pt.params / 1e6:.1f}M", f"{pt.ppl:.2f}",
                  *[f"{pt.latency_ms[p.name]:.2f}{'' if pt.measured[p.name] else ' (pred)'}" for p in profs])
    return t
