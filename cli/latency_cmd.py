"""`adaprune-edge bench | profile | fit`: measured and predicted latency, profile calibration, budget solving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaprune_edge import models, profiles
from adaprune_edge.latency import budget
from adaprune_edge.latency import backends as latency
from adaprune_edge.cli.common import (budget_options, cli_errors, console, err_console, fail, human_bytes,
                                      recipe_or, recipes)
from adaprune_edge.errors import ConfigError
from adaprune_edge.device import Device
from adaprune_edge.latency.backends import LatencyReport
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.archs.structure import Structure

DEVICE_HELP = "Device profile: a shipped name (see `devices list`) or a path to your .yaml."


def _structure(spec: str) -> Structure:
    resolved = models.resolve(spec)
    if resolved.kind == "gguf":  # metadata only: no torch load
        from adaprune_edge.archs.gguf_structure import structure_of_gguf

        return structure_of_gguf(resolved.path)
    if resolved.kind == "pruned_dir":
        meta = json.loads((Path(resolved.path) / models.STRUCTURE_FILE).read_text())
        return Structure.from_dict(meta["structure"])
    with console.status(f"reading the shape of {spec} ..."):
        return Structure.from_model(models.load(spec).model)


def _device(device: str, backend: Optional[str], ssh: Optional[str], ssh_config: Optional[str],
            llama_bench: Optional[str], n_prompt: int, n_gen: int, reps: int) -> Device:
    backend = "ssh" if ssh and not backend else backend
    if backend and backend not in latency.backend_names():
        raise ConfigError(f"unknown backend {backend!r}; known: {', '.join(latency.backend_names())}")
    return Device.resolve(device, backend=backend, ssh_host=ssh, ssh_config=ssh_config, llama_bench=llama_bench,
                          n_prompt=n_prompt, n_gen=n_gen, repetitions=reps)


def _fmt_spread(value: float, spread: float, digits: int) -> str:
    return f"{value:.{digits}f}" + (f" ± {spread / 2:.{digits}f}" if spread else "")


def _row(r: LatencyReport) -> list[str]:
    kind = f"measured ({r.repetitions}x median)" if r.measured else "predicted"
    rss = human_bytes(r.peak_rss_bytes) if r.peak_rss_bytes else "-"
    return [r.backend, r.tool, kind, _fmt_spread(r.prefill_tps, r.prefill_tps_spread, 0),
            _fmt_spread(r.decode_ms_per_token, r.decode_ms_spread, 2), f"{r.decode_tps:.0f}", rss]


def _table(title: str, reports: list[LatencyReport], profile: profiles.DeviceProfile) -> Table:
    t = Table(title=title)
    for col in ("backend", "tool", "figures", "prefill tok/s", "decode ms/token", "decode tok/s", "peak RSS"):
        t.add_column(col, justify="right" if "/" in col or "RSS" in col else "left")
    for r in reports:
        t.add_row(*_row(r))
    t.caption = f"budget: {profile.budget.describe()}; ± is half the min–max spread over repetitions"
    return t


@cli_errors
def bench_cmd(
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec: its shape is measured on a shape-only GGUF at --quant."),
    gguf: Optional[Path] = typer.Option(None, "--gguf", help="Measure this GGUF file as it is (instead of --model)."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="Quant type for --model (default: the profile's)."),
    backend: Optional[str] = typer.Option(None, "--backend", help=f"{' | '.join(latency.backend_names())} (default: the profile's)."),
    ssh: Optional[str] = typer.Option(None, "--ssh", help="user@host[:port] to measure on with llama-bench (implies --backend ssh)."),
    ssh_config: Optional[str] = typer.Option(None, "--ssh-config", help="ssh config file passed as `ssh -F` (keys, ports)."),
    llama_bench: Optional[str] = typer.Option(None, "--llama-bench", help="Path of llama-bench on the device (default: the profile's)."),
    n_prompt: int = typer.Option(128, "--n-prompt", min=1, help="Prompt tokens for the prefill figure."),
    n_gen: int = typer.Option(64, "--n-gen", min=1, help="Generated tokens for the decode figure."),
    reps: int = typer.Option(3, "--reps", min=1, help="Repetitions; the median is reported."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure again even if the lookup table has this shape."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON instead of a table."),
) -> None:
    """Measured latency of a model (or GGUF file) on a device, next to the roofline prediction."""
    if (model is None) == (gguf is None):
        fail("give exactly one of --model or --gguf")
    dev = _device(device, backend, ssh, ssh_config, llama_bench, n_prompt, n_gen, reps)
    profile = dev.profile

    with console.status(f"measuring on {profile.name} with the {dev.settings.backend} backend ..."):
        if gguf is not None:
            main = dev.measure_file(gguf, None, not no_cache)
            pred = dev.predict_file(gguf)
            title = f"{gguf.name} on {profile.name}"
        else:
            q = recipe_or(quant, profile.quant)
            st = _structure(model)
            main = dev.latency_of(st, q, not no_cache)
            pred = dev.predict(st, q)
            title = f"{model} ({st.condensed()}) {q} on {profile.name}"
    reports = [main, pred] if main.measured else [main]
    if as_json:
        console.print_json(json.dumps([r.to_dict() for r in reports]))
    else:
        console.print(_table(title, reports, profile))


@cli_errors
@budget_options
def fit_cmd(
    limits: Any,
    device: str = typer.Option(..., "--device", "-d", help=DEVICE_HELP),
    model: str = typer.Option("default", "--model", "-m", help="Model spec whose shape is pruned."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="Quant type (default: the profile's)."),
    family: str = typer.Option("uniform", "--family", help=f"Recipe family: {', '.join(budget.RECIPES.names())}."),
    max_ratio: float = typer.Option(0.9, "--max-ratio", min=0.05, max=0.95, help="Largest pruning ratio to consider."),
    confirm: bool = typer.Option(True, "--confirm/--no-confirm", help="Confirm the predicted answer by measurement when the profile's backend measures."),
    as_json: bool = typer.Option(False, "--json", help="Print the solution as JSON."),
) -> None:
    """The smallest pruning ratio whose structure meets every limit of the device's budget (decode, first
    token, prompt speed, RAM at the context length)."""
    budget_ms = limits.decode_ms
    dev = Device.resolve(device, budget=limits)
    profile = dev.profile
    q = recipe_or(quant, profile.quant)
    base = _structure(model)
    with console.status("solving (bisection on predicted latency, then a confirming measurement) ..."):
        sol = budget.solve(base, profile, dev.predictor(q), family, max_ratio, decode_ms=budget_ms, confirm=confirm)
    if as_json:
        console.print_json(json.dumps(sol.to_dict()))
        return
    _print_solution(sol, profile, q, budget_ms)


def _print_solution(sol: budget.Solution, profile: profiles.DeviceProfile, quant: QuantRecipe, budget_ms: Optional[float]) -> None:
    t = Table(title=f"minimum pruning ratio on {profile.name} ({quant})", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    st = sol.structure
    rows = [("ratio", f"{sol.ratio:.3f}"), ("structure", st.condensed()),
            ("parameters", f"{st.params():,} (decoder {st.decoder_params():,})"),
            ("GGUF size", human_bytes(st.gguf_bytes(quant))),
            ("RAM incl. KV @ ctx", f"{human_bytes(budget.ram_of(st, quant, profile))} @ {profile.context_length} "
                                   f"({profile.kv_cache_type} K/V cache)"),
            ("predicted", f"decode {sol.predicted.decode_ms_per_token:.2f} ms/token, prefill {sol.predicted.prefill_tps:.0f} tok/s")]
    if sol.measured:
        m = sol.measured
        rows.append(("measured", f"decode {m.decode_ms_per_token:.2f} ms/token, prefill {m.prefill_tps:.0f} tok/s ({m.backend})"))
    report = sol.measured or sol.predicted
    checks = budget.constraints(report, budget.ram_of(st, quant, profile), profile, budget_ms)
    rows += [("limit" if c.ok else "limit MISSED", c.describe()) for c in checks]
    rows.append(("binds", budget.binding(checks).name))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@cli_errors
def profile_cmd(
    device: str = typer.Option("this-host", "--device", "-d", help="Profile to start from (its threads, budget, RAM are kept)."),
    model: str = typer.Option("default", "--model", "-m", help="Model whose shapes are measured."),
    quants: str = typer.Option("Q4_K_M,Q8_0,Q4_0", "--quants", help="Comma-separated quant types to measure (each gets its own decode and prompt compute rate in the profile: type_rates)."),
    shapes: int = typer.Option(6, "--shapes", min=4, max=12, help="Shapes per quant type (uniform, tapered, fewer layers)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Profile YAML to write (default: ./<device>.yaml)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
    n_prompt: int = typer.Option(128, "--n-prompt", min=1, help="Prompt tokens per measurement (prefill figure)."),
    n_gen: int = typer.Option(64, "--n-gen", min=1, help="Generated tokens per measurement (decode figure)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure again even if the lookup table has a shape."),
) -> None:
    """Measure shapes of a model on this machine, fit the roofline (bandwidth, overheads, compute), report
    its error on held-out shapes, and write a profile YAML with the fitted figures."""
    from adaprune_edge.latency import profiling
    from adaprune_edge.runs import check_writable, write_text

    dev = Device.resolve(device, backend="local", n_prompt=n_prompt, n_gen=n_gen)
    base_profile, s = dev.profile, dev.settings
    out = out or Path(f"{base_profile.name}.yaml")
    check_writable(out, force)
    qs = recipes(quants)
    base = _structure(model)
    cand = profiling.probe_structures(base, qs[0], shapes)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("measuring", total=len(cand) * len(qs))

        probes = profiling.measure_probes(cand, qs, s, base_profile.name, not no_cache,
                                          lambda label: bar.update(task, advance=1, description=f"measured {label}"))
    result = profiling.split_fit(probes)
    fitted = profiling.fitted_profile(base_profile, result)
    write_text(out, profiling.profile_yaml(fitted, result, len(probes)))
    _print_fit(result, probes, out)


def _print_fit(result, probes, out: Path) -> None:
    rf, sm = result.roofline, result.summary()
    t = Table(title="fitted roofline")
    for col in ("shape", "quant", "set", "measured ms/token", "predicted ms/token", "error"):
        t.add_column(col)
    for i, p in enumerate(probes):
        pred = rf.decode_ms(p.workload, p.report.n_prompt + p.report.n_gen / 2)
        err = (pred - p.report.decode_ms_per_token) / p.report.decode_ms_per_token
        t.add_row(p.label, p.quant.name, "fit" if i % 2 == 0 else "held out", f"{p.report.decode_ms_per_token:.2f}",
                  f"{pred:.2f}", f"{100 * err:+.1f}%")
    console.print(t)
    console.print(f"bandwidth {rf.mem_bandwidth_gbs:.2f} GB/s, per-layer {rf.overhead_ms_per_layer:.4f} ms, per-token "
                  f"{rf.overhead_ms_per_token:.3f} ms, decode compute {rf.decode_gflops:.1f} GFLOP/s, prefill compute {rf.compute_gflops:.1f} GFLOP/s; held-out decode error "
                  f"median {100 * sm['median_rel_error']:.1f}%, max {100 * sm['max_rel_error']:.1f}%")
    console.print(f"wrote {out}")
