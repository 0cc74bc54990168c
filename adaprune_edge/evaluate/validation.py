"""Validation of an exported GGUF in llama-cpp-python against torch and/or a reference (F16) GGUF.

Every model scores the SAME token ids (tokenized once with the HF tokenizer, fed to llama.cpp as ids):
perplexity, KL(reference ‖ candidate) and top-1 agreement per position (as llama.cpp's perplexity
tool does for quants), a short greedy generation, prefill / decode tokens/s, and peak RSS. The gate:
an F16/F32 GGUF's perplexity within 1% of the torch model's on the same windows."""

from __future__ import annotations

import math
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from adaprune_edge.runtime import llamacpp as llama_runner

GATE_REL_PPL = 0.01  # F16 GGUF perplexity must be within 1% of torch
LogitsFn = Callable[[Sequence[int]], np.ndarray]


@dataclass(frozen=True)
class WindowScores:
    """Per-window means (nats): candidate NLL, reference NLL, KL(ref‖cand); top-1 agreement fraction."""

    nll: tuple[float, ...]
    ref_nll: tuple[float, ...] = ()
    kl: tuple[float, ...] = ()
    top1: tuple[float, ...] = ()

    @property
    def ppl(self) -> float:
        return math.exp(float(np.mean(self.nll)))

    @property
    def ref_ppl(self) -> float | None:
        return math.exp(float(np.mean(self.ref_nll))) if self.ref_nll else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Speed:
    """llama.cpp throughput: prefill and decode tokens/s at `threads`, and RSS (bytes)."""

    prefill_tps: float
    decode_tps: float
    threads: int
    prefill_tokens: int
    decode_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Speed":
        return cls(**d)


@dataclass(frozen=True)
class ValidationReport:
    """Everything `validate` measured; `passed` is None when no gate applies (no torch or a quantized file)."""

    gguf: str
    file_type: str
    windows: int
    seq_len: int
    ppl: float
    reference: str | None
    reference_ppl: float | None
    kl_mean: float | None
    kl_max_window: float | None
    top1: float | None
    torch_ppl: float | None
    ppl_rel_diff_vs_torch: float | None
    passed: bool | None
    generation: str
    speed: Speed | None
    peak_rss_bytes: int
    tokenizer_agreement: float | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["speed"] = self.speed.to_dict() if self.speed else None
        d["notes"] = list(self.notes)
        d["gate"] = f"F16/F32 GGUF perplexity within {GATE_REL_PPL:.0%} of torch on the same windows"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ValidationReport":
        """The report of to_dict() (its `gate` sentence is derived)."""
        kw = {k: v for k, v in d.items() if k != "gate"}
        kw["speed"] = Speed.from_dict(d["speed"]) if d.get("speed") else None
        kw["notes"] = tuple(d.get("notes", ()))
        return cls(**kw)


def torch_logits_fn(model: Any) -> LogitsFn:
    """Logits [n, vocab] float32 of one token sequence from an HF causal LM."""
    import torch

    def fn(tokens: Sequence[int]) -> np.ndarray:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([list(tokens)]), use_cache=False).logits[0]
        return out.float().numpy()

    return fn


def gguf_logits_fn(llm: Any) -> LogitsFn:
    return lambda tokens: llama_runner.logits(llm, tokens)


def _nll(logp: np.ndarray, tokens: Sequence[int]) -> float:
    target = np.asarray(tokens[1:])
    return float(-logp[np.arange(len(target)), target].mean())


def score_windows(candidate: LogitsFn, windows: np.ndarray, reference: LogitsFn | None = None,
                  progress: Callable[[int], None] | None = None) -> WindowScores:
    """NLL of `candidate` per window and, with a reference, its NLL, KL(ref‖cand) and top-1 agreement
    over the predicting positions (all but the last of each window). One window in memory at a time."""
    nll, ref_nll, kl, top1 = [], [], [], []
    for w in windows:
        tokens = [int(t) for t in w]
        lp = llama_runner.log_softmax(candidate(tokens)[:-1])
        nll.append(_nll(lp, tokens))
        if reference is not None:
            rp = llama_runner.log_softmax(reference(tokens)[:-1])
            ref_nll.append(_nll(rp, tokens))
            kl.append(float((np.exp(rp) * (rp - lp)).sum(axis=-1).mean()))
            top1.append(float((rp.argmax(-1) == lp.argmax(-1)).mean()))
        if progress:
            progress(1)
    return WindowScores(tuple(nll), tuple(ref_nll), tuple(kl), tuple(top1))


def measure_speed(path: str | Path, threads: int, prefill_tokens: Sequence[int], decode_tokens: int = 32) -> Speed:
    """Prefill tokens/s (one batch of `prefill_tokens`) and greedy decode tokens/s (one token per eval)."""
    llm = llama_runner.open_gguf(path, n_ctx=max(256, len(prefill_tokens) + decode_tokens + 8), threads=threads,
                                 logits_all=False)
    try:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(list(prefill_tokens))
        t_prefill = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(decode_tokens):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])
        t_decode = time.perf_counter() - t0
    finally:
        llm.close()
    return Speed(len(prefill_tokens) / t_prefill, decode_tokens / t_decode, threads, len(prefill_tokens), decode_tokens)


def generate(llm: Any, prompt: str, max_tokens: int = 24) -> str:
    """Greedy completion of `prompt` (llama.cpp tokenizer)."""
    llm.reset()
    out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_k=1)
    return out["choices"][0]["text"]


def tokenizer_agreement(llm: Any, tokenizer: Any, text: str) -> float:
    """Fraction of positions where llama.cpp's tokenization of `text` equals the HF tokenizer's."""
    hf = tokenizer(text, add_special_tokens=False)["input_ids"]
    cpp = llm.tokenize(text.encode(), add_bos=False, special=False)
    same = sum(a == b for a, b in zip(hf, cpp))
    return same / max(len(hf), len(cpp), 1)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def file_type(path: str | Path) -> str:
    """Dominant weight type of a GGUF, e.g. 'F16', 'Q4_K' (by bytes of 2-D tensors)."""
    import gguf

    sizes: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if len(t.shape) == 2:
            sizes[t.tensor_type.name] = sizes.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return max(sizes, key=sizes.get) if sizes else "?"


def gate(ftype: str, ppl: float, torch_ppl: float | None) -> tuple[bool | None, float | None]:
    """(passed, relative difference) of the F16 gate; passed is None where it does not apply."""
    if torch_ppl is None:
        return None, None
    rel = ppl / torch_ppl - 1.0
    return (abs(rel) <= GATE_REL_PPL if ftype in ("F16", "F32") else None), rel


def validate(path: str | Path, windows: np.ndarray, *, torch_model: Any = None, tokenizer: Any = None,
             reference_gguf: str | Path | None = None, threads: int = 2, prompt: str = "The capital of France is",
             sample_text: str = "", progress: Callable[[int], None] | None = None,
             kv_cache: str = "F16") -> ValidationReport:
    """Score `path` on `windows` (token ids [n, seq_len]) against the reference GGUF if given, else torch,
    with llama.cpp's K/V cache of type kv_cache (the way the device will run it).

    With both, torch is scored separately for the gate. `progress` is called once per window scored."""
    seq_len = int(windows.shape[1])
    ftype = file_type(path)
    llm = llama_runner.open_gguf(path, n_ctx=seq_len, threads=threads, kv_cache=kv_cache)
    ref_llm = llama_runner.open_gguf(reference_gguf, n_ctx=seq_len, threads=threads) if reference_gguf else None
    try:
        ref_fn = gguf_logits_fn(ref_llm) if ref_llm else (torch_logits_fn(torch_model) if torch_model is not None else None)
        scores = score_windows(gguf_logits_fn(llm), windows, ref_fn, progress)
        torch_ppl = None
        if torch_model is not None:
            torch_ppl = scores.ref_ppl if ref_llm is None else score_windows(torch_logits_fn(torch_model), windows,
                                                                             progress=progress).ppl
        text = generate(llm, prompt)
        agree = tokenizer_agreement(llm, tokenizer, sample_text) if tokenizer is not None and sample_text else None
    finally:
        llm.close()
        if ref_llm is not None:
            ref_llm.close()
    speed = measure_speed(path, threads, [int(t) for t in windows[0][:128]])
    passed, rel = gate(ftype, scores.ppl, torch_ppl)
    reference = str(reference_gguf) if reference_gguf else ("torch" if torch_model is not None else None)
    notes = () if agree is None or agree == 1.0 else (f"llama.cpp tokenizes text differently from HF ({agree:.1%} equal)",)
    return ValidationReport(str(path), ftype, int(windows.shape[0]), seq_len, scores.ppl, reference, scores.ref_ppl,
                            float(np.mean(scores.kl)) if scores.kl else None,
                            float(np.max(scores.kl)) if scores.kl else None,
                            float(np.mean(scores.top1)) if scores.top1 else None,
                            torch_ppl, rel, passed, text, speed, peak_rss_bytes(), agree, notes)
