"""ARCHS: HF model_type → ArchAdapter, `adapter_for(model_or_config)`, and the adapter of a GGUF file's
llama.cpp architecture (`adapter_for_gguf`)."""

from __future__ import annotations

import difflib
from typing import Any

from adaprune_edge.archs.base import PER_LAYER_ARCH, ArchAdapter, config_of
from adaprune_edge.errors import ModelError
from adaprune_edge.registry import Registry

ARCHS: Registry[ArchAdapter] = Registry("architecture")
ORDER = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "smollm3", "phi3")  # how the supported list is shown


def supported() -> list[str]:
    """Registered HF model types, Llama family first."""
    names = ARCHS.names()
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def unsupported_message(arch: str, what: str, names: list[str] | None = None) -> str:
    """One line: '<what> has architecture 'x' (did you mean 'y'?); supported: llama, mistral, ...' (`names`:
    the supported ones, default the HF model types)."""
    names = supported() if names is None else names
    close = difflib.get_close_matches(arch, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{what} has architecture {arch!r}{hint}; supported: {', '.join(names)}"


def adapter_for(model_or_config: Any, what: str = "the model") -> ArchAdapter:
    """The adapter of an HF model or config (by model_type); ModelError listing the supported ones."""
    arch = getattr(config_of(model_or_config), "model_type", None) or "?"
    if arch not in ARCHS:
        raise ModelError(unsupported_message(arch, what))
    return ARCHS.get(arch)


def is_supported(model_type: str) -> bool:
    return model_type in ARCHS


def gguf_families() -> dict[str, str]:
    """llama.cpp architecture → HF model_type of the adapter that reads it: each adapter's `gguf_arch` (the first
    family in `supported()` order where several share one: llama before mistral), and `deci`, the per-layer form
    of the first per-layer family (llama)."""
    out: dict[str, str] = {}
    for name in supported():
        adapter = ARCHS.get(name)
        out.setdefault(adapter.gguf_arch, name)
        if adapter.per_layer:
            out.setdefault(PER_LAYER_ARCH, name)
    return out


def adapter_for_gguf(arch: str, what: str = "the GGUF") -> ArchAdapter:
    """The adapter of a GGUF's general.architecture; ModelError listing the supported ones."""
    families = gguf_families()
    if arch not in families:
        raise ModelError(unsupported_message(arch, what, list(families)))
    return ARCHS.get(families[arch])
