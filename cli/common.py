"""Shared CLI plumbing: consoles, the error boundary, and small table helpers."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from adaprune_edge.errors import AdapruneError
from adaprune_edge.quant import QuantRecipe, check_installed
from adaprune_edge.runtime import kvcache

PLAIN_WIDTH = 240  # columns of a console that prints to a file or pipe (install.sh's log, `| less`)


def _console(stderr: bool = False) -> Console:
    """A rich console. Printed to a non-terminal, rich would assume 80 columns and fold every table's long
    cells into one-word lines; there it is PLAIN_WIDTH wide (COLUMNS, when set, still wins)."""
    stream = sys.stderr if stderr else sys.stdout
    if "COLUMNS" not in os.environ and not stream.isatty():
        return Console(stderr=stderr, width=PLAIN_WIDTH)
    return Console(stderr=stderr)


console = _console()
err_console = _console(stderr=True)
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


def recipe(text: str) -> QuantRecipe:
    """A --quant value → its QuantRecipe, checked against the installed llama.cpp (ConfigError naming the
    types it has)."""
    return check_installed(QuantRecipe.parse(text.strip()))


def recipes(text: str) -> list[QuantRecipe]:
    """A comma-separated --quants value → QuantRecipes, each checked as `recipe` does."""
    return [recipe(x) for x in text.split(",") if x.strip()]


def recipe_or(text: str | None, default: QuantRecipe) -> QuantRecipe:
    """--quant (its first recipe) or `default` (the profile's), checked as `recipe` does."""
    return recipes(text)[0] if text else check_installed(default)


def say_uniform_only(spec: Any) -> None:
    """Under a --dry-run space: why a uniform-only family (Qwen3, Gemma 3, SmolLM3) searches uniform widths."""
    if not spec.bounds.uniform_only:
        return
    from adaprune_edge import archs, models  # lazy: CLI start-up

    adapter = archs.ARCHS.get(str(models.model_type(spec.model)))
    console.print(f"searching uniform structures only: {adapter.uniform_only_message()}", highlight=False)


# -- budget options shared by build, search, fit and tradeoff (the profile's figures where not given) ----
_BUDGET_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("budget_ms", Optional[float], typer.Option(None, "--budget-ms", help="Decode budget: at most this many ms per generated token (default: the profile's).")),
    ("target_tps", Optional[float], typer.Option(None, "--target-tps", help="Decode budget as at least this many generated tokens/s (= 1000 / --budget-ms).")),
    ("ttft_s", Optional[float], typer.Option(None, "--ttft-s", help="First-token budget: the first token within this many seconds after a prompt of --prompt-tokens tokens (prompt processing is FLOP-bound: pruning shortens it, quantization barely does).")),
    ("prompt_tokens", Optional[int], typer.Option(None, "--prompt-tokens", help="Prompt length of the first-token budget (default: the profile's, else 512); latency is measured at this prompt length.")),
    ("context", Optional[int], typer.Option(None, "--context", help="Context length the memory check is made at (the KV cache grows with it; default: the profile's).")),
    ("ram_share", Optional[float], typer.Option(None, "--ram-share", help="Share of the device's RAM the model may use, in (0, 1] (default: the profile's).")),
    ("ram_mb", Optional[float], typer.Option(None, "--ram-mb", help="Memory limit of the llama.cpp process in MiB (weights + KV cache at --context + runtime), e.g. what an app leaves free.")),
    ("kv_cache", Optional[str], typer.Option(None, "--kv-cache", help=f"K/V cache type the memory check starts from: {', '.join(kvcache.ORDER)} ({kvcache.ORDER[0]} is llama.cpp's default; quantized V needs flash attention; the report says how to set it in llama.cpp, llama-cpp-python and Ollama). build moves to a quantized cache when that lets a larger weight type fit.")),
)


def budget_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command the budget options; it receives them as `limits` (overrides.BudgetOverrides),
    checked (one-line ConfigError) before its body runs, so before anything is loaded or written."""
    sig = inspect.signature(fn)
    names = [n for n, _, _ in _BUDGET_OPTIONS]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {n: kwargs.pop(n, None) for n in names}
        return fn(*args, limits=budget_overrides(**values), **kwargs)

    params = [p for p in sig.parameters.values() if p.name != "limits"]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann)
               for n, ann, opt in _BUDGET_OPTIONS]
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "limits"},
                               **{n: ann for n, ann, _ in _BUDGET_OPTIONS}}
    return wrapper


def budget_overrides(budget_ms: Any = None, target_tps: Any = None, ttft_s: Any = None, prompt_tokens: Any = None,
                     context: Any = None, ram_share: Any = None, ram_mb: Any = None, kv_cache: Any = None) -> Any:
    """The budget options as overrides.BudgetOverrides, checked (one-line ConfigError) before anything loads;
    --target-tps is folded into decode_ms."""
    from adaprune_edge import overrides

    decode_ms = overrides.budget_override(budget_ms, target_tps)
    return overrides.BudgetOverrides(decode_ms=decode_ms, ttft_s=ttft_s, prompt_tokens=prompt_tokens,
                                    context_length=context, ram_share=ram_share, ram_mb=ram_mb,
                                    kv_cache=kv_cache).check()
