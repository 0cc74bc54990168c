"""Perplexity, KL divergence and top-1 agreement against a reference model on the same token windows.

As llama.cpp's `perplexity --kl-divergence` does for quants: per predicted position, KL(P_ref ‖ P_model)
in nats and whether both models' most likely next token agree. Either side can be a torch model or a
GGUF (any scorer of harness.py with `window_logprobs`), so dense-vs-pruned and torch-vs-GGUF use one path.
Positions: every token of a window but the last predicts the next one (as perplexity.window_nll).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class WindowReport:
    """Scores on n_windows × seq_len tokens. KL fields (nats/token) are None without a reference."""

    n_windows: int
    seq_len: int
    n_tokens: int            # predicted positions: n_windows × (seq_len − 1)
    ppl: float
    reference: str | None = None
    ppl_ref: float | None = None
    kl_mean: float | None = None
    kl_stderr: float | None = None
    kl_median: float | None = None
    kl_p99: float | None = None
    kl_max: float | None = None
    top1_agreement: float | None = None   # fraction of positions where both argmax tokens agree

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowReport":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def kl_per_token(logp_ref: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """KL(P_ref ‖ P) per row (nats) from log-probabilities [positions, vocab]."""
    return (logp_ref.exp() * (logp_ref - logp)).sum(dim=-1).double()


def evaluate_windows(scorer: Any, windows: torch.Tensor, reference: Any | None = None, reference_name: str | None = None,
                     progress: Callable[[int], None] | None = None) -> WindowReport:
    """PPL of `scorer` on windows [n, seq_len] of token ids; with `reference`, also its PPL, KL and top-1."""
    nll, nll_ref, kl, same = [], [], [], []
    for window in windows:
        logp = scorer.window_logprobs(window.tolist())[:-1]
        nll.append(_nll_full(logp, window))
        if reference is not None:
            logp_ref = reference.window_logprobs(window.tolist())[:-1]
            nll_ref.append(_nll_full(logp_ref, window))
            kl.append(kl_per_token(logp_ref, logp))
            same.append((logp_ref.argmax(-1) == logp.argmax(-1)).double())
        if progress:
            progress(1)
    n, seq_len = windows.shape
    base = dict(n_windows=n, seq_len=seq_len, n_tokens=n * (seq_len - 1), ppl=math.exp(torch.cat(nll).mean().item()))
    if reference is None:
        return WindowReport(**base)
    kl_all = torch.cat(kl)
    return WindowReport(**base, reference=reference_name, ppl_ref=math.exp(torch.cat(nll_ref).mean().item()),
                        kl_mean=kl_all.mean().item(), kl_stderr=(kl_all.std() / math.sqrt(kl_all.numel())).item(),
                        kl_median=kl_all.median().item(), kl_p99=torch.quantile(kl_all, 0.99).item(),
                        kl_max=kl_all.max().item(), top1_agreement=torch.cat(same).mean().item())


def _nll_full(logp: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """NLL (nats) of tokens 1..L−1 given log-probs of positions 0..L−2."""
    return -logp.gather(1, window[1:, None]).squeeze(1).double()
