"""Child-process workers: the parent runs `python -m <module> ...` and reads the one JSON line the child
prints; the child runs one function and prints its result (or one error line and exit code 1). A crash
or an out-of-memory kill in llama.cpp then ends only the child, and its RSS is its own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Callable

from adaprune_edge.errors import LatencyError


def run_json(argv: list[str], timeout_s: float, what: str) -> dict[str, Any]:
    """Run a worker; the JSON of its last stdout line. Raises LatencyError as `run` does, or for no result."""
    return parse_last_json(run(argv, timeout_s, what), what)


def run(argv: list[str], timeout_s: float, what: str) -> str:
    """Run a command; its stdout. Raises LatencyError naming `what` on timeout or failure (with the
    child's last stderr line)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        raise LatencyError(f"{what} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        cause = "killed (out of memory?)" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise LatencyError(f"{what} failed: {cause}: {tail}")
    return proc.stdout


def parse_last_json(stdout: str, what: str) -> Any:
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise LatencyError(f"{what} printed no result") from None


def child_main(parser: argparse.ArgumentParser, compute: Callable[[argparse.Namespace], dict[str, Any]],
               argv: list[str] | None = None) -> None:
    """The worker side: parse argv, print compute(args) as one JSON line, or its error and exit 1."""
    args = parser.parse_args(argv)
    try:
        result = compute(args)
    except Exception as e:  # the parent shows this line
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))
