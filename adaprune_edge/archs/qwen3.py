"""Qwen3: Llama layout plus per-head QK RMS-norms and an explicit head_dim (128 ≠ hidden / heads).

Uniform pruning only: llama.cpp's `qwen3` graph builds every layer with layer 0's shapes and `deci` has no
QK-norm. The QK-norm weights act on one head's dimensions and are shared by all heads, so pruning heads
leaves them as they are; `qwen3` rotates halves (NEOX RoPE) like HF, so Q/K rows keep HF's order."""

from __future__ import annotations

from typing import Any

from adaprune_edge.archs.base import ATTN_K_NORM, ATTN_Q_NORM, ArchAdapter, config_of
from adaprune_edge.archs.registry import ARCHS
from adaprune_edge.errors import ModelError


class Qwen3Adapter(ArchAdapter):
    name, gguf_arch, per_layer = "qwen3", "qwen3", False
    head_norms = {"q_norm": ATTN_Q_NORM, "k_norm": ATTN_K_NORM}
    pruning = "heads, KV groups, FFN channels, layers; uniform widths only"
    deci_lacks = "QK-norm"

    def check_config(self, cfg: Any) -> None:
        super().check_config(cfg)
        if getattr(config_of(cfg), "use_sliding_window", False):
            raise ModelError("qwen3 with use_sliding_window=true is not supported: llama.cpp's qwen3 graph has "
                             "no sliding window")


ARCHS.register("qwen3")(Qwen3Adapter())
