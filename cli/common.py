"""Shared CLI plumbing: consoles, the error boundary, and small table helpers."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import typer
from rich.console import Console

from adaprune_edge.errors import AdapruneError
from adaprune_edge.quant import QuantRecipe, check_installed

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AdapruneError into one red line and exit code 2 (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AdapruneError as e:
            if STATE["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def human_count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n < 1e9 else f"{n / 1e9:.2f}B"


def fail(message: str) -> None:
    """For CLI-only argument checks: red line, exit 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def is_tty() -> bool:
    return sys.stderr.isatty()


def recipe_names(text: str) -> list[str]:
    """--quant / --quants values → canonical quant recipe names, each one checked against the installed
    llama.cpp (ConfigError naming the types it has)."""
    return [check_installed(QuantRecipe.parse(x.strip())).name for x in text.split(",") if x.strip()]


def say_uniform_only(spec: Any) -> None:
    """Under a --dry-run space: why a uniform-only family (Qwen3, Gemma 3, SmolLM3) searches uniform widths."""
    if not spec.bounds.uniform_only:
        return
    from adaprune_edge import archs, models  # lazy: CLI start-up

    adapter = archs.ARCHS.get(str(models.model_type(spec.model)))
    console.print(f"searching uniform structures only: {adapter.uniform_only_message()}", highlight=False)
