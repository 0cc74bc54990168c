"""lm-evaluation-harness-style multiple-choice scoring for torch models and GGUF files.

Per choice, the summed log-likelihood (nats) of the continuation tokens given the context; acc picks
the argmax, acc_norm the argmax of log-likelihood / len(choice in characters); standard errors are
sqrt(p(1-p)/(n-1)) (lm-eval's sample-stddev / sqrt(n)). Tokenization copies lm-eval's `_encode_pair`:
trailing spaces of the context move to the continuation, context+continuation is encoded whole and
split at the length of the separately encoded context. Both backends score the same token ids.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from adaprune_edge.runtime import llamacpp as llama_runner
from adaprune_edge.errors import DataError
from adaprune_edge.evaluate.tasks import Doc, TaskData, subset

Progress = Callable[[int], None]
Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> Pair:
    """lm-eval's split: encode(context + continuation), cut at len(encode(context))."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:
        raise DataError("empty context: this harness needs a non-empty prompt")
    whole = encode(context + continuation)
    ctx = encode(context)
    return ctx, whole[len(ctx):]


def _model_input(pair: Pair, max_length: int) -> tuple[list[int], int]:
    """lm-eval's (context + continuation)[-(max_length + 1):][:-1] and the number of scored positions."""
    full = (pair[0] + pair[1])[-(max_length + 1):]
    return full[:-1], min(len(pair[1]), len(full) - 1)


class TorchScorer:
    """Scores token ids with an HF causal LM, batched with right padding (sorted by length, as lm-eval)."""

    name = "torch"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, max_length: int | None = None) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        cfg_len = getattr(model.config, "max_position_embeddings", None)
        self.max_length = max_length or cfg_len or 2048

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"])

    @torch.no_grad()
    def _batch(self, inputs: list[tuple[list[int], list[int], int]]) -> list[float]:
        width = max(len(ids) for ids, _, _ in inputs)
        ids = torch.zeros(len(inputs), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, (seq, _, _) in enumerate(inputs):
            ids[b, :len(seq)] = torch.tensor(seq)
            mask[b, :len(seq)] = 1
        hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        rows = [hidden[b, len(seq) - n: len(seq)] for b, (seq, _, n) in enumerate(inputs)]
        # the output head only on scored positions: [sum(n), vocab] instead of [batch, width, vocab]
        logp = torch.log_softmax(self.model.get_output_embeddings()(torch.cat(rows)).float(), dim=-1)
        targets = torch.tensor([t for _, cont, n in inputs for t in cont[len(cont) - n:]], dtype=torch.long)
        picked = logp[torch.arange(targets.numel()), targets].double()
        return [float(x.sum()) for x in torch.split(picked, [n for _, _, n in inputs])]

    def loglikelihoods(self, pairs: Sequence[Pair], progress: Progress | None = None) -> list[float]:
        """Summed log-likelihood (nats) of each continuation given its context."""
        prepared = [(*_model_input(p, self.max_length),) for p in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -len(prepared[i][0]))
        out = [0.0] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            chunk = [i for i in order[start:start + self.batch_size]]
            scored = [i for i in chunk if prepared[i][1] > 0]  # empty continuation: log-likelihood 0
            if scored:
                inputs = [(prepared[i][0], pairs[i][1], prepared[i][1]) for i in scored]
                for i, ll in zip(scored, self._batch(inputs)):
                    out[i] = ll
            if progress:
                progress(len(chunk))
        return out

    @torch.no_grad()
    def window_logprobs(self, tokens: Sequence[int]) -> torch.Tensor:
        """Log-softmax [len(tokens), vocab] (float32) of one window."""
        ids = torch.as_tensor(list(tokens), dtype=torch.long)[None]
        return torch.log_softmax(self.model(input_ids=ids, use_cache=False).logits[0].float(), dim=-1)


class LlamaCppTokenizer:
    """The GGUF's own vocabulary behind the HF-tokenizer call that perplexity.token_windows uses."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def encode(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else []

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}


class GGUFScorer:
    """Scores token ids with llama.cpp; consecutive requests that share a prefix (the choices of one doc)
    reuse its KV cache, so the context is evaluated once per doc."""

    name = "gguf"

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.tokenizer = LlamaCppTokenizer(llm)
        self.max_length = llm.n_ctx()

    @classmethod
    def open(cls, path: str, n_ctx: int = 2048, threads: int | None = None) -> "GGUFScorer":
        return cls(llama_runner.open_gguf(path, n_ctx=n_ctx, threads=threads, logits_all=True))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def _eval_reusing_prefix(self, seq: list[int]) -> np.ndarray:
        llm = self.llm
        cached = np.asarray(llm.input_ids[:llm.n_tokens])
        n = min(len(cached), len(seq) - 1)
        same = np.flatnonzero(cached[:n] != np.asarray(seq[:n], dtype=cached.dtype))
        keep = int(same[0]) if same.size else n
        llm.n_tokens = keep  # llama-cpp-python's eval() drops the KV cache past n_tokens
        llm.eval(seq[keep:])
        return llm.scores

    def loglikelihoods(self, pairs: Sequence[Pair], progress: Progress | None = None) -> list[float]:
        out = []
        for pair in pairs:
            seq, n = _model_input(pair, self.max_length)
            ll = 0.0
            if n > 0:
                scores = self._eval_reusing_prefix(seq)
                logp = llama_runner.log_softmax(np.asarray(scores[len(seq) - n: len(seq)], dtype=np.float64))
                ll = float(logp[np.arange(n), pair[1][len(pair[1]) - n:]].sum())
            out.append(ll)
            if progress:
                progress(1)
        return out

    def close(self) -> None:
        self.llm.close()

    def window_logprobs(self, tokens: Sequence[int]) -> torch.Tensor:
        self.llm.n_tokens = 0  # llama_runner.logits resets; keep the prefix cache consistent too
        return torch.from_numpy(llama_runner.log_softmax(llama_runner.logits(self.llm, tokens)))


@dataclass(frozen=True)
class TaskResult:
    """Accuracy of one task. acc_norm is None where lm-eval reports only acc (partial scoring)."""

    task: str
    source: str
    n: int
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    seconds: float
    backend: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TaskResult":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def stderr(p: float, n: int) -> float | None:
    """Standard error of a mean of n 0/1 scores: sqrt(p(1-p)/(n-1)); None for n < 2."""
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None


def doc_pairs(scorer: Any, docs: Sequence[Doc]) -> list[Pair]:
    return [encode_pair(scorer.encode, c, x) for d in docs for c, x in d.requests()]


def score(scorer: Any, docs: Sequence[Doc], progress: Progress | None = None) -> list[list[float]]:
    """Log-likelihood of each choice of each doc."""
    lls = scorer.loglikelihoods(doc_pairs(scorer, docs), progress)
    out, i = [], 0
    for d in docs:
        out.append(lls[i:i + len(d.choices)])
        i += len(d.choices)
    return out


def accuracy(docs: Sequence[Doc], lls: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(acc, acc_norm) with lm-eval's argmax (first index wins ties)."""
    hits = norm_hits = 0
    for d, ll in zip(docs, lls):
        ll = np.asarray(ll, dtype=np.float64)
        hits += int(np.argmax(ll)) == d.label
        norm_hits += int(np.argmax(ll / np.asarray(d.norm_lengths(), dtype=np.float64))) == d.label
    return hits / len(docs), norm_hits / len(docs)


def n_requests(docs: Sequence[Doc]) -> int:
    return sum(len(d.choices) for d in docs)


def evaluate_task(scorer: Any, data: TaskData, limit: int | None = None, seed: int = 1234,
                  progress: Progress | None = None, has_acc_norm: bool = True) -> TaskResult:
    """Score a task (a seeded subset of `limit` docs) → TaskResult. progress(n) counts scored choices."""
    docs = subset(data.docs, limit, seed)
    t0 = time.perf_counter()
    acc, acc_norm = accuracy(docs, score(scorer, docs, progress))
    n = len(docs)
    return TaskResult(data.task, data.source, n, acc, stderr(acc, n), acc_norm if has_acc_norm else None,
                      stderr(acc_norm, n) if has_acc_norm else None, time.perf_counter() - t0, scorer.name)
