"""A thin wrapper over llama-cpp-python: open a GGUF quietly and read per-position logits.

Shared by validation (perplexity, KL) and evaluation (multiple-choice log-likelihoods), so both score
exactly the same token ids as torch (never re-tokenized text)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from adaprune_edge.errors import ExportError


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp logs to fd 2 from C; silence it while loading."""
    fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(devnull)


def open_gguf(path: str | Path, n_ctx: int = 1024, threads: int | None = None, logits_all: bool = True,
              kv_cache: str = "F16") -> Any:
    """Load a GGUF with llama-cpp-python (CPU) with a K/V cache of type kv_cache (runtime/kvcache.py).
    Raises ExportError if llama.cpp cannot load it."""
    from adaprune_edge.runtime import kvcache

    import llama_cpp

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"GGUF file {path} not found")
    threads = threads or max(1, os.cpu_count() or 1)
    try:
        with _quiet_stderr():
            return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_threads=threads,
                                   n_threads_batch=threads, logits_all=logits_all, verbose=False,
                                   **kvcache.llama_kwargs(kv_cache))
    except (ValueError, RuntimeError) as e:
        raise ExportError(f"llama.cpp cannot load {path} ({e})") from None


def logits(llm: Any, tokens: Sequence[int]) -> np.ndarray:
    """Logits [len(tokens), n_vocab] (float32) for one sequence, from a fresh context (no BOS added)."""
    if len(tokens) > llm.n_ctx():
        raise ValueError(f"{len(tokens)} tokens exceed the context of {llm.n_ctx()}")
    llm.reset()
    llm.eval(list(int(t) for t in tokens))
    return np.array(llm.scores[: llm.n_tokens], dtype=np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
