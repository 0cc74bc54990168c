"""Perplexity of a torch causal LM on fixed, non-overlapping token windows (no BOS)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from adaprune_edge.errors import DataError


def read_text(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file {path} not found")
    text = p.read_text(errors="replace")
    if not text.strip():
        raise DataError(f"text file {path} is empty")
    return text


def token_windows(tokenizer: Any, text: str, seq_len: int, n_windows: int | None = None,
                  offset_windows: int = 0) -> torch.Tensor:
    """Tokenize `text` once and cut consecutive windows of seq_len tokens → LongTensor [n, seq_len].

    offset_windows skips that many windows first (to keep calibration and evaluation apart)."""
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    ids = torch.tensor(ids, dtype=torch.long)
    total = ids.numel() // seq_len
    if total - offset_windows < 1:
        raise DataError(f"text has {ids.numel()} tokens: fewer than one window of {seq_len} after skipping {offset_windows}")
    stop = total if n_windows is None else min(total, offset_windows + n_windows)
    return ids[offset_windows * seq_len: stop * seq_len].view(-1, seq_len)


@torch.no_grad()
def window_nll(model: Any, windows: torch.Tensor, batch_size: int = 4,
               progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Mean next-token NLL (nats) per window → FloatTensor [n]."""
    out = []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start:start + batch_size]
        logits = model(input_ids=batch, use_cache=False).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none")
        out.append(nll.view(batch.shape[0], -1).mean(dim=1))
        if progress:
            progress(batch.shape[0])
    return torch.cat(out)


def perplexity(model: Any, windows: torch.Tensor, batch_size: int = 4,
               progress: Callable[[int], None] | None = None) -> float:
    """exp(mean NLL over all predicted tokens of all windows)."""
    nll = window_nll(model, windows, batch_size, progress)
    return math.exp(nll.mean().item())
