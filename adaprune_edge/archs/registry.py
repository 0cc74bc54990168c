"""ARCHS: HF model_type → ArchAdapter, and `adapter_for(model_or_config)`."""

from __future__ import annotations

import difflib
from typing import Any

from adaprune_edge.archs.base import ArchAdapter, config_of
from adaprune_edge.errors import ModelError
from adaprune_edge.registry import Registry

ARCHS: Registry[ArchAdapter] = Registry("architecture")
ORDER = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "smollm3", "phi3")  # how the supported list is shown


def supported() -> list[str]:
    """Registered HF model types, Llama family first."""
    names = ARCHS.names()
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def unsupported_message(arch: str, what: str) -> str:
    """One line: '<what> has architecture 'x' (did you mean 'y'?); supported: llama, mistral, ...'."""
    close = difflib.get_close_matches(arch, supported(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{what} has architecture {arch!r}{hint}; supported: {', '.join(supported())}"


def adapter_for(model_or_config: Any, what: str = "the model") -> ArchAdapter:
    """The adapter of an HF model or config (by model_type); ModelError listing the supported ones."""
    arch = getattr(config_of(model_or_config), "model_type", None) or "?"
    if arch not in ARCHS:
        raise ModelError(unsupported_message(arch, what))
    return ARCHS.get(arch)


def is_supported(model_type: str) -> bool:
    return model_type in ARCHS
