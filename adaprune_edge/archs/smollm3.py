"""SmolLM3: Llama layout with no RoPE on every 4th layer (NoPE). llama.cpp's `smollm3` graph hard-codes
that step (n_no_rope_layer_step = 4: layer i rotates iff (i + 1) % 4 ≠ 0), so the file is exact only while
the kept layers still follow it: uniform widths only (`deci` has no NoPE layers) and no layer removal."""

from __future__ import annotations

from typing import Any

from adaprune_edge.archs.base import ArchAdapter, config_of
from adaprune_edge.archs.registry import ARCHS
from adaprune_edge.errors import ConfigError, ExportError, ModelError

NO_ROPE_STEP = 4


def llama_cpp_rope_layers(n_layer: int) -> list[bool]:
    """Which layers llama.cpp's smollm3 graph rotates."""
    return [(i + 1) % NO_ROPE_STEP != 0 for i in range(n_layer)]


class SmolLM3Adapter(ArchAdapter):
    name, gguf_arch, per_layer = "smollm3", "smollm3", False
    pruning = "heads, KV groups, FFN channels; uniform widths only, no layer removal (NoPE every 4th layer)"
    deci_lacks = "NoPE layers"

    def check_config(self, cfg: Any) -> None:
        super().check_config(cfg)
        cfg = config_of(cfg)
        if getattr(cfg, "use_sliding_window", False):
            raise ModelError("smollm3 with use_sliding_window=true is not supported by llama.cpp's smollm3 graph")
        rope_layers = [bool(x) for x in getattr(cfg, "no_rope_layers", None) or []]
        if rope_layers and rope_layers != llama_cpp_rope_layers(len(rope_layers)):
            raise ModelError("smollm3 with a NoPE pattern other than every 4th layer is not supported: llama.cpp "
                             "hard-codes that step")

    def check_prune(self, config: Any) -> None:
        super().check_prune(config)
        if config.ratio > 0 and config.depth_share > 0:
            raise ConfigError("smollm3 layers cannot be removed: llama.cpp's smollm3 graph puts its NoPE layers at "
                              "every 4th position, which layer removal would shift; use depth_share 0")

    def check_model(self, model: Any) -> None:
        rope = [bool(getattr(self.attention(layer), "use_rope", True)) for layer in self.layers(model)]
        if rope != llama_cpp_rope_layers(len(rope)):
            raise ExportError("this smollm3 model's NoPE layers are not every 4th one (layers were removed?); "
                              "llama.cpp's smollm3 graph hard-codes that step")


ARCHS.register("smollm3")(SmolLM3Adapter())
