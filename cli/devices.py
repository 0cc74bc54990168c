"""`adaprune-edge devices ...`: list, show and validate device profiles."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from adaprune_edge import profiles
from adaprune_edge.cli.common import cli_errors, console

app = typer.Typer(help="Device profiles: list the shipped ones, show one resolved, validate your own YAML.",
                  no_args_is_help=True)


def _fmt(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:g}{unit}"


@app.command("list")
@cli_errors
def list_cmd() -> None:
    """Table of every shipped device profile (after `extends:` inheritance)."""
    table = Table(title="Device profiles")
    for col in ("name", "RAM", "GB/s", "GFLOP/s", "threads", "quant", "budget", "backend"):
        table.add_column(col, no_wrap=col == "name")
    for p in profiles.list_profiles():
        budget = p.budget.describe()
        table.add_row(p.name, f"{p.ram_gb:g} GB", f"{p.mem_bandwidth_gbs:g}", f"{p.compute_gflops:g}",
                      str(p.threads), p.quant.name, budget, p.backend)
    console.print(table)


@app.command("show")
@cli_errors
def show_cmd(name: str = typer.Argument(..., help="Shipped profile name or path to a .yaml profile."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Show one profile with inheritance resolved."""
    p = profiles.load_profile(name)
    if as_json:
        console.print_json(json.dumps(p.to_dict()))
        return
    table = Table(title=f"Device profile {p.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in p.to_dict().items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)


@app.command("validate")
@cli_errors
def validate_cmd(path: str = typer.Argument(..., help="Path to a device profile .yaml.")) -> None:
    """Check a profile file: known keys, types, required fields, inheritance. Exit 2 on the first error."""
    p = profiles.load_profile(path)
    console.print(f"[green]ok[/] {path}: profile {p.name!r} is valid")
