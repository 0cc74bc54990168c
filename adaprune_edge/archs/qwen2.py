"""Qwen2 / Qwen2.5: Llama layout plus q/k/v biases (sliced with their rows).

llama.cpp's `qwen2` graph creates Q and the output projection as hidden × hidden (src/models/qwen2.cpp),
so it holds only uniform files whose attention is unpruned; everything else (pruned heads, per-layer
widths, bias compensation on o_proj/down_proj) is written as `deci`, which maps Qwen2 exactly: same
RMS-norm/SiLU-gated layout, q/k/v biases at each layer's own width (create_tensor_qkv), Q/K rows
permuted for its pair-wise RoPE like Llama's."""

from __future__ import annotations

from typing import Any

from adaprune_edge.archs.base import ArchAdapter, config_of
from adaprune_edge.archs.registry import ARCHS
from adaprune_edge.errors import ModelError


class Qwen2Adapter(ArchAdapter):
    name, gguf_arch, per_layer = "qwen2", "qwen2", True
    pruning = "heads, KV groups, FFN channels, layers; per-layer widths (deci); q/k/v biases kept"

    def native_fits(self, structure: Any) -> bool:
        return structure.is_uniform and all(s.n_head * structure.head_dim == structure.hidden for s in structure.layers)

    def check_config(self, cfg: Any) -> None:
        super().check_config(cfg)
        if getattr(config_of(cfg), "use_sliding_window", False):
            raise ModelError("qwen2 with use_sliding_window=true is not supported: llama.cpp's qwen2 graph has "
                             "no sliding window")


ARCHS.register("qwen2")(Qwen2Adapter())
