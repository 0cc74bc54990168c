"""The `local` latency backend: llama-cpp-python timing in a child process (or `llama-bench` when on PATH).

The child (`python -m adaprune_edge.latency.local GGUF ...`) loads the model with logits_all=False, warms up,
then per repetition times one prompt of n_prompt tokens (prefill tokens/s) and n_gen single-token
`eval` calls after it (decode ms/token, wall clock), and prints one JSON line with the samples and its
peak RSS. A crash or OOM kills only the child; the caller gets a LatencyError."""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from adaprune_edge.latency import llama_bench
from adaprune_edge import worker
from adaprune_edge.latency.backends import BenchSettings, LatencyReport, register_backend
from adaprune_edge.runtime.llamacpp import open_gguf


def _tokens(n: int, n_vocab: int) -> list[int]:
    """Deterministic ordinary token ids (latency does not depend on which ids)."""
    return [100 + (i * 7919) % max(1, n_vocab - 200) for i in range(n)]


def _one_run(llm: Any, prompt: list[int], gen: list[int]) -> tuple[float, float]:
    """(prefill tokens/s, decode ms/token) of one repetition from an empty KV cache."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    for tok in gen:
        llm.eval([tok])
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), (t2 - t1) * 1000.0 / len(gen)


def run_worker(gguf: str, n_prompt: int, n_gen: int, repetitions: int, threads: int) -> dict[str, Any]:
    """Measure in this process (called in the child). Returns samples and peak RSS (bytes)."""

    llm = open_gguf(gguf, n_ctx=n_prompt + n_gen + 8, threads=threads, logits_all=False)
    toks = _tokens(n_prompt + n_gen, llm.n_vocab())
    prompt, gen = toks[:n_prompt], toks[n_prompt:]
    _one_run(llm, prompt[: min(16, n_prompt)], gen[:4])  # warm-up: page in weights, build graphs
    prefill, decode = [], []
    for _ in range(repetitions):
        p, d = _one_run(llm, prompt, gen)
        prefill.append(p)
        decode.append(d)
    return {"prefill_tps": prefill, "decode_ms": decode, "peak_rss_bytes": peak_rss_bytes()}


def peak_rss_bytes() -> int:
    """This process's peak resident set, bytes. VmHWM belongs to the address space, which exec replaces;
    ru_maxrss survives fork+exec, so a child of a 600 MB pytest/torch parent would report 600 MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: KiB on Linux, bytes on macOS


def _child_argv(path: Path, s: BenchSettings) -> list[str]:
    return [sys.executable, "-m", "adaprune_edge.latency.local", str(path), "--n-prompt", str(s.n_prompt),
            "--n-gen", str(s.n_gen), "--repetitions", str(s.repetitions), "--threads", str(s.threads)]


def _via_python(path: Path, s: BenchSettings) -> LatencyReport:
    data = worker.run_json(_child_argv(path, s), s.timeout_s, "local latency worker")
    return LatencyReport.from_samples(data["decode_ms"], data["prefill_tps"], backend="local", measured=True,
                                      n_prompt=s.n_prompt, n_gen=s.n_gen, threads=s.threads,
                                      peak_rss_bytes=int(data["peak_rss_bytes"]), tool="llama-cpp-python")


@register_backend("local", measures=True, on_this_host=True)
def measure_local(path: Path, settings: BenchSettings) -> LatencyReport:
    """Measure on this machine: `llama-bench -o json` if it is on PATH, else llama-cpp-python in a child."""
    binary = shutil.which(settings.llama_bench)
    if binary:
        out = worker.run(llama_bench.argv(binary, str(path), settings), settings.timeout_s, "llama-bench")
        return llama_bench.parse(out, "local", settings)
    return _via_python(path, settings)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m adaprune_edge.latency.local", description=__doc__)
    ap.add_argument("gguf")
    ap.add_argument("--n-prompt", type=int, default=128)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    worker.child_main(ap, lambda a: run_worker(a.gguf, a.n_prompt, a.n_gen, a.repetitions, a.threads), argv)


if __name__ == "__main__":
    main()
