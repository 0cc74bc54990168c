"""Architecture adapters: one module per HF decoder family, registered by model_type in ARCHS.

    adapter = adapter_for(model)              # ModelError listing the supported families otherwise
    adapter.linear(layer, "attn_q")           # HF modules by GGUF role
    adapter.gguf_arch_for(structure, biases)  # 'llama' / 'qwen3' / ... or 'deci' for per-layer widths
    adapter_for_gguf('gemma3')                # the adapter of a GGUF's general.architecture
"""

from adaprune_edge.archs.base import ArchAdapter
from adaprune_edge.archs.hparams import HParams
from adaprune_edge.archs.registry import (ARCHS, adapter_for, adapter_for_gguf, gguf_families, is_supported, supported,
                                         unsupported_message)
from adaprune_edge.archs import gemma3, llama, phi3, qwen2, qwen3, smollm3  # noqa: F401  (register the families)

__all__ = ["ARCHS", "ArchAdapter", "HParams", "adapter_for", "adapter_for_gguf", "gguf_families", "is_supported",
           "supported", "unsupported_message"]
