"""The `adaprune-edge` command: a thin typer layer over the library.

The command modules import the heavy parts of the library (transformers, SMAC, llama-cpp-python,
matplotlib) inside the command functions: measured here, `import adaprune_edge.cli.app` takes ~2.3 s
that way and ~4.5 s with every import at module top (transformers alone), and `--help`, `devices` and
bad-input errors should not wait for a model library."""

from __future__ import annotations

import os

import typer

from adaprune_edge import __version__
from adaprune_edge.cli import devices
from adaprune_edge.cli.common import STATE
from adaprune_edge.cli.inspect_cmd import inspect_cmd
from adaprune_edge.cli.prune_cmd import prune_cmd
from adaprune_edge.cli.recover_cmd import recover_cmd
from adaprune_edge.cli.export_cmd import export_cmd
from adaprune_edge.cli.validate_cmd import validate_cmd
from adaprune_edge.cli.eval_cmd import eval_cmd
from adaprune_edge.cli.compare_cmd import compare_cmd
from adaprune_edge.cli.latency_cmd import bench_cmd, fit_cmd, profile_cmd
from adaprune_edge.cli.search_cmd import search_cmd
from adaprune_edge.cli.build_cmd import build_cmd
from adaprune_edge.cli.tradeoff_cmd import tradeoff_cmd

app = typer.Typer(
    name="adaprune-edge",
    help="Prune a Hugging Face causal LM into a GGUF model that fits a named edge device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adaprune-edge {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """Prune a Hugging Face causal LM into a GGUF model that fits a named edge device."""
    STATE["debug"] = debug


app.add_typer(devices.app, name="devices")
app.command("inspect")(inspect_cmd)
app.command("prune")(prune_cmd)
app.command("recover")(recover_cmd)
app.command("export")(export_cmd)
app.command("validate")(validate_cmd)
app.command("eval")(eval_cmd)
app.command("compare")(compare_cmd)
app.command("bench")(bench_cmd)
app.command("profile")(profile_cmd)
app.command("fit")(fit_cmd)
app.command("search")(search_cmd)
app.command("build")(build_cmd)
app.command("tradeoff")(tradeoff_cmd)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
