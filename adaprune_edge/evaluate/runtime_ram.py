"""Runtime RAM of a shipped GGUF: predicted (weights + KV cache + runtime) and measured in llama.cpp.

The build's own peak RSS (torch, calibration, SMAC) says nothing about what the device needs; this
measures a fresh child process that only loads the file with llama-cpp-python at the profile's context
length and evaluates a few tokens, so the KV cache and compute buffers are allocated and touched.

    python -m adaprune_edge.evaluate.runtime_ram model.gguf --n-ctx 2048   # prints one JSON line"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaprune_edge import worker
from adaprune_edge.latency.local import _tokens, peak_rss_bytes
from adaprune_edge.runtime.llamacpp import open_gguf
from adaprune_edge.gguf.header import read_header

N_EVAL_TOKENS = 8  # enough to run the graph once for prompt and once for decode


@dataclass(frozen=True)
class RuntimeRam:
    """Bytes of RAM to run a GGUF. predicted_bytes: budget.ram_bytes (GGUF tensor bytes + F16 KV cache at
    n_ctx + a fixed runtime share); rss_bytes: resident set of the llama.cpp process after loading and
    evaluating N_EVAL_TOKENS (psutil), peak_rss_bytes: its maximum; baseline_rss_bytes: the same child's
    RSS before loading (Python + llama-cpp-python), already included in rss_bytes."""

    gguf: str
    n_ctx: int
    predicted_bytes: int | None
    rss_bytes: int
    peak_rss_bytes: int
    baseline_rss_bytes: int
    file_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RuntimeRam":
        return cls(**d)


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def load_and_eval(gguf: str, n_ctx: int, threads: int, kv_cache: str = "F16", fill: int = 0) -> dict[str, int]:
    """In this process (the child): RSS before loading, after loading + an eval of max(fill, N_EVAL_TOKENS)
    tokens (fill the context to touch every K/V page), and the peak."""

    before = _rss()
    llm = open_gguf(gguf, n_ctx=n_ctx, threads=threads, logits_all=False, kv_cache=kv_cache)
    llm.eval(_tokens(min(max(fill, N_EVAL_TOKENS), n_ctx), llm.n_vocab()))
    after = _rss()
    return {"baseline_rss_bytes": before, "rss_bytes": after, "peak_rss_bytes": max(peak_rss_bytes(), after)}


def measure_runtime_ram(gguf: str | Path, n_ctx: int = 2048, threads: int = 2, predicted_bytes: int | None = None,
                        timeout_s: float = 300.0, kv_cache: str = "F16", fill: int = 0) -> RuntimeRam:
    """Measure the RSS of a fresh llama.cpp process (llama-cpp-python in a child) that loads `gguf` with a
    context of `n_ctx` tokens and evaluates a few tokens. `predicted_bytes` (e.g. budget.ram_bytes of the
    structure at the profile's context length) is carried along for the report. Raises ExportError for a
    missing/corrupt file and LatencyError if the child fails or times out (an OOM kills only the child)."""

    path = Path(gguf)
    read_header(path)  # a missing or cut-off file is one clear error here, not a child's stack trace
    argv = [sys.executable, "-m", "adaprune_edge.evaluate.runtime_ram", str(path), "--n-ctx", str(n_ctx),
            "--threads", str(threads), "--kv-cache", kv_cache, "--fill", str(fill)]
    data = worker.run_json(argv, timeout_s, "runtime RAM worker")
    return RuntimeRam(str(path), n_ctx, predicted_bytes, data["rss_bytes"], data["peak_rss_bytes"],
                      data["baseline_rss_bytes"], path.stat().st_size)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m adaprune_edge.evaluate.runtime_ram", description=__doc__)
    ap.add_argument("gguf")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--kv-cache", default="F16")
    ap.add_argument("--fill", type=int, default=0, help="tokens to evaluate (touches the K/V cache pages)")
    worker.child_main(ap, lambda a: load_and_eval(a.gguf, a.n_ctx, a.threads, a.kv_cache, a.fill), argv)


if __name__ == "__main__":
    main()
