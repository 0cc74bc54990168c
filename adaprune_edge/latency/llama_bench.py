"""llama.cpp's `llama-bench`: its command line and its `-o json` output, shared by the local and ssh backends.

Schema (llama.cpp tools/llama-bench README, "JSON"): an array of test objects; a prompt-processing test
has `n_prompt` > 0 and `n_gen` == 0, a generation test `n_prompt` == 0 and `n_gen` > 0; each carries
`avg_ts`, `stddev_ts` (tokens/s) and `samples_ts` (one per repetition), plus `n_threads`."""

from __future__ import annotations

import json
from typing import Any

from adaprune_edge.errors import LatencyError
from adaprune_edge.latency.backends import BenchSettings, LatencyReport


def argv(binary: str, model_path: str, settings: BenchSettings) -> list[str]:
    """Arguments for one prefill test (pp n_prompt) and one decode test (tg n_gen), JSON output."""
    return [binary, "-m", model_path, "-p", str(settings.n_prompt), "-n", str(settings.n_gen),
            "-r", str(settings.repetitions), "-t", str(settings.threads), "-o", "json"]


def _tests(stdout: str) -> list[dict[str, Any]]:
    start = stdout.find("[")  # some builds print log lines before the JSON array
    try:
        data = json.loads(stdout[start:]) if start >= 0 else None
    except json.JSONDecodeError as e:
        raise LatencyError(f"llama-bench printed invalid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise LatencyError("llama-bench output is not a JSON array of tests (is it an old build without -o json?)")
    return data


def _samples(test: dict[str, Any]) -> list[float]:
    samples = test.get("samples_ts") or [test.get("avg_ts")]
    values = [float(s) for s in samples if s is not None]
    if not values or min(values) <= 0:
        raise LatencyError(f"llama-bench test has no positive tokens/s figures: {sorted(test)[:8]}")
    return values


def parse(stdout: str, backend: str, settings: BenchSettings) -> LatencyReport:
    """LatencyReport from llama-bench JSON (median over its repetition samples)."""
    tests = _tests(stdout)
    pp = [t for t in tests if int(t.get("n_prompt", 0)) > 0 and int(t.get("n_gen", 0)) == 0]
    tg = [t for t in tests if int(t.get("n_gen", 0)) > 0 and int(t.get("n_prompt", 0)) == 0]
    if not pp or not tg:
        raise LatencyError("llama-bench output lacks a prompt (pp) or a generation (tg) test")
    prefill = _samples(pp[0])
    decode_ms = [1000.0 / s for s in _samples(tg[0])]
    return LatencyReport.from_samples(decode_ms, prefill, backend=backend, measured=True,
                                      n_prompt=int(pp[0]["n_prompt"]), n_gen=int(tg[0]["n_gen"]),
                                      threads=int(tg[0].get("n_threads", settings.threads)), tool="llama-bench",
                                      note=str(tg[0].get("model_type", "")))
