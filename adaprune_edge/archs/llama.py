"""Llama family (Llama 2/3.x, SmolLM2, Mistral): `llama` for uniform files, `deci` for per-layer widths;
Llama 3.x RoPE scaling is written as llama.cpp's `rope_freqs` tensor (convert_hf_to_gguf LlamaModel)."""

from __future__ import annotations

import math
from typing import Any

from adaprune_edge.archs.base import ArchAdapter, config_of
from adaprune_edge.archs.hparams import HParams
from adaprune_edge.archs.registry import ARCHS
from adaprune_edge.errors import ExportError


def llama3_rope_freqs(rope: dict[str, Any], head_dim: int) -> tuple[float, ...]:
    """Per-frequency RoPE divisors of Llama 3.x's 'llama3' scaling (one per pair of head dims), exactly as
    llama.cpp's converter computes them; llama.cpp divides each rotation frequency by its factor."""
    base = float(rope.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return tuple(out)


class LlamaAdapter(ArchAdapter):
    name, gguf_arch, per_layer = "llama", "llama", True
    pruning = "heads, KV groups, FFN channels, layers; per-layer widths (deci)"

    def hparams(self, cfg: Any) -> HParams:
        cfg = config_of(cfg)
        rope = self.rope(cfg)
        kind = rope["rope_type"]
        ctx, theta, eps = int(getattr(cfg, "max_position_embeddings", 8192)), float(rope["rope_theta"]), float(cfg.rms_norm_eps)
        if kind == "default":
            return HParams(ctx, theta, eps)
        if kind == "llama3":
            return HParams(ctx, theta, eps, rope_freqs=llama3_rope_freqs(rope, self.head_dim(cfg)))
        if kind == "linear":
            return HParams(ctx, theta, eps, rope_linear=float(rope["factor"]))
        raise ExportError(f"RoPE scaling {kind!r} is not supported by the GGUF exporter (default, linear, llama3)")


ARCHS.register("llama")(LlamaAdapter())
ARCHS.register("mistral")(type("MistralAdapter", (LlamaAdapter,), {"name": "mistral"})())
