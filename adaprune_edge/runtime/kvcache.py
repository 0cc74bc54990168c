"""The K/V cache type: llama.cpp's runtime lever for memory at long context.

The KV cache grows with layers x KV heads x head size x context; weight quantization does nothing for it.
llama.cpp stores it as F16 by default and can quantize K and V (Q8_0, Q4_0; a quantized V cache needs flash
attention). It is a runtime setting — a GGUF or an Ollama Modelfile cannot carry it — so the report says
how to apply it in each runtime."""

from __future__ import annotations

from typing import Any

from adaprune_edge.errors import ConfigError

# bytes per cached element (ggml block sizes: Q8_0 34 bytes / 32 values, Q4_0 18 / 32) and ggml type ids
TYPES: dict[str, tuple[float, int]] = {"F16": (2.0, 1), "Q8_0": (34 / 32, 8), "Q4_0": (18 / 32, 2)}
ORDER = ("F16", "Q8_0", "Q4_0")  # least to most aggressive


def check(name: str) -> str:
    """The canonical name (case-insensitive) or a one-line ConfigError listing the known types."""
    up = str(name).upper()
    if up not in TYPES:
        raise ConfigError(f"unknown K/V cache type {name!r}; known: {', '.join(ORDER)}")
    return up


def bytes_per_elem(name: str) -> float:
    return TYPES[check(name)][0]


def llama_kwargs(name: str) -> dict[str, Any]:
    """llama_cpp.Llama arguments for this cache type ({} for the default F16)."""
    name = check(name)
    if name == "F16":
        return {}
    ggml = TYPES[name][1]
    return {"type_k": ggml, "type_v": ggml, "flash_attn": True}


def how_to_apply(name: str) -> dict[str, str]:
    """How each runtime is told to use this cache type (nothing to do for F16)."""
    name = check(name)
    if name == "F16":
        return {"note": "llama.cpp's default F16 K/V cache: nothing to set"}
    low = name.lower()
    return {"llama.cpp": f"llama-cli / llama-server -fa on -ctk {low} -ctv {low}",
            "llama-cpp-python": f"Llama(..., flash_attn=True, type_k={TYPES[name][1]}, type_v={TYPES[name][1]})  # GGML_TYPE_{name}",
            "ollama": f"server environment: OLLAMA_FLASH_ATTENTION=1 OLLAMA_KV_CACHE_TYPE={low}"}
