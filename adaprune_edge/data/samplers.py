"""Samplers behind `builtin:self`: many sequences at once from llama.cpp (a GGUF) or torch.

Both take a list of prompts (token ids) and return, per prompt, the sampled continuation (token ids).
Each prompt has its own seeded numpy generator, so a sample depends on (seed, prompt index) only, not on
which batch slot it ran in. llama.cpp decodes one token of every running sequence per call (continuous
batching over `n_parallel` slots): on a 2-core CPU one decode call of 32 tokens costs little more than
one of a single token, so this is where the speed of self-generation comes from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from adaprune_edge.errors import ModelError
from adaprune_edge.runtime.llamacpp import _quiet_stderr

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Sampling:
    """Temperature / top-k / top-p sampling of `max_new_tokens` per prompt (stops early at `stop_ids`)."""

    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    max_new_tokens: int = 256


def sample_token(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> int:
    """One token from a logits row: top-k, then the smallest nucleus with mass ≥ top_p, at temperature."""
    k = min(s.top_k, logits.shape[0])
    top = np.argpartition(logits, -k)[-k:]
    top = top[np.argsort(-logits[top], kind="stable")]
    z = logits[top].astype(np.float64) / max(s.temperature, 1e-6)
    p = np.exp(z - z.max())
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), s.top_p)) + 1
    p = p[:keep] / p[:keep].sum()
    return int(top[rng.choice(keep, p=p)])


# -- llama.cpp ----------------------------------------------------------------------------------------
class _Slot:
    __slots__ = ("job", "tokens", "out", "pos", "row")

    def __init__(self, job: int, tokens: list[int]) -> None:
        self.job, self.tokens, self.out, self.pos, self.row = job, tokens, [], 0, -1


def llama_cpp_generate(gguf: str, prompts: Sequence[list[int]], s: Sampling, seed: int, stop_ids: set[int],
                       *, n_parallel: int = 32, threads: int = 2, enough: Callable[[list], bool] | None = None,
                       progress: Progress | None = None) -> list[list[int] | None]:
    """Continuations of `prompts` from the GGUF, `n_parallel` sequences per decode call. Stops launching
    new prompts once `enough(results)` is true (results of prompts never run stay None)."""
    import llama_cpp

    longest = max(len(p) for p in prompts) + s.max_new_tokens
    with _quiet_stderr():
        llama_cpp.llama_backend_init()
        mp = llama_cpp.llama_model_default_params()
        model = llama_cpp.llama_model_load_from_file(gguf.encode(), mp)
        if not model:
            raise ModelError(f"llama.cpp cannot load {gguf} for self-generation")
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_seq_max, cp.kv_unified = n_parallel * longest, n_parallel, False
        cp.n_batch = cp.n_ubatch = max(512, n_parallel * 2)
        cp.n_threads = cp.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(model, cp)
    try:
        return _decode_loop(llama_cpp, model, ctx, prompts, s, seed, stop_ids, n_parallel, cp.n_batch, enough, progress)
    finally:
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


def _decode_loop(lc: Any, model: Any, ctx: Any, prompts: Sequence[list[int]], s: Sampling, seed: int,
                 stop_ids: set[int], n_parallel: int, n_batch: int, enough: Callable[[list], bool] | None,
                 progress: Progress | None) -> list[list[int] | None]:
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    mem = lc.llama_get_memory(ctx)
    batch = lc.llama_batch_init(n_batch, 0, 1)
    results: list[list[int] | None] = [None] * len(prompts)
    slots: list[_Slot | None] = [None] * n_parallel
    next_job, done_tokens, total = 0, 0, len(prompts) * s.max_new_tokens
    try:
        while True:
            if enough is not None and enough(results):  # in-flight samples are dropped: no overshoot
                return results
            for i in range(n_parallel):  # fill free slots with the next prompts
                if slots[i] is None and next_job < len(prompts):
                    lc.llama_memory_seq_rm(mem, i, -1, -1)
                    slots[i] = _Slot(next_job, list(prompts[next_job]))
                    next_job += 1
            if not any(slots):
                return results
            _fill_batch(batch, slots, n_batch)
            if lc.llama_decode(ctx, batch) != 0:
                raise ModelError("llama.cpp decode failed during self-generation (context full?)")
            for i, sl in enumerate(slots):
                if sl is None or sl.row < 0 or sl.tokens:  # prompt not fully fed yet
                    continue
                logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, sl.row), shape=(n_vocab,))
                tok = sample_token(logits, s, np.random.default_rng([seed, sl.job, len(sl.out)]))
                sl.out.append(tok)
                done_tokens += 1
                if tok in stop_ids or len(sl.out) >= s.max_new_tokens:
                    results[sl.job] = sl.out[:-1] if tok in stop_ids else sl.out
                    slots[i] = None
                else:
                    sl.tokens = [tok]
            if progress:
                progress(done_tokens, total, "tokens sampled (llama.cpp)")
    finally:
        lc.llama_batch_free(batch)


def _fill_batch(batch: Any, slots: list[_Slot | None], n_batch: int) -> None:
    """Pending tokens of every running slot (a prompt may need several calls), logits at each slot's last."""
    n = 0
    for i, sl in enumerate(slots):
        if sl is None:
            continue
        sl.row = -1
        take = sl.tokens[: max(0, n_batch - n)]
        for j, tok in enumerate(take):
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = tok, sl.pos + j, 1
            batch.seq_id[n][0] = i
            batch.logits[n] = 0
            n += 1
        if take:
            sl.pos += len(take)
            sl.tokens = sl.tokens[len(take):]
            if not sl.tokens:
                batch.logits[n - 1] = 1
                sl.row = n - 1
    batch.n_tokens = n


# -- torch --------------------------------------------------------------------------------------------
def torch_generate(model: Any, prompts: Sequence[list[int]], s: Sampling, seed: int, stop_ids: set[int], *,
                   batch_size: int = 8, enough: Callable[[list], bool] | None = None,
                   progress: Progress | None = None) -> list[list[int] | None]:
    """Continuations from a torch causal LM, `batch_size` left-padded prompts per step, same sampler."""
    import torch

    results: list[list[int] | None] = [None] * len(prompts)
    for start in range(0, len(prompts), batch_size):
        if enough is not None and enough(results):
            break
        group = list(range(start, min(start + batch_size, len(prompts))))
        outs = _torch_group(model, [prompts[j] for j in group], s, seed, group, stop_ids, torch)
        for j, out in zip(group, outs):
            results[j] = out
        if progress:
            progress(group[-1] + 1, len(prompts), "prompts sampled (torch)")
    return results


def _torch_group(model: Any, prompts: list[list[int]], s: Sampling, seed: int, jobs: list[int],
                 stop_ids: set[int], torch: Any) -> list[list[int]]:
    """Left-padded batch decode with the KV cache; each row samples with its own seeded generator."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    rngs = [None] * len(prompts)
    outs: list[list[int]] = [[] for _ in prompts]
    live = [True] * len(prompts)
    past, step_ids = None, ids
    with torch.no_grad():
        for _ in range(s.max_new_tokens):
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1].float().numpy()
            nxt = []
            for r in range(len(prompts)):
                rngs[r] = np.random.default_rng([seed, jobs[r], len(outs[r])])
                tok = sample_token(logits[r], s, rngs[r]) if live[r] else 0
                if live[r]:
                    if tok in stop_ids:
                        live[r] = False
                    else:
                        outs[r].append(tok)
                nxt.append(tok)
            if not any(live):
                break
            step_ids = torch.tensor(nxt)[:, None]
            mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=mask.dtype)], dim=1)
    return outs
