"""The Structure of a GGUF file of a supported family, read from its header alone (no weights; ~0.1 s)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaprune_edge.archs.base import PER_LAYER_ARCH
from adaprune_edge.archs.registry import ARCHS, adapter_for_gguf
from adaprune_edge.errors import AdapruneError, LatencyError
from adaprune_edge.gguf import keys as gguf_keys
from adaprune_edge.gguf.header import read_header
from adaprune_edge.gguf.names import OUTPUT, TOKEN_EMBD, tensor_name
from adaprune_edge.archs.structure import LayerShape, Structure


def _per_layer(meta: dict, key: str, n: int) -> list[int]:
    value = meta[key]
    return [int(v) for v in value] if isinstance(value, list) else [int(value)] * n


def stored_structure(meta: dict[str, Any]) -> Structure | None:
    """The Structure adaprune-edge recorded in a file it wrote (kept layers, family), None otherwise."""
    try:
        return Structure.from_dict(json.loads(meta[gguf_keys.STRUCTURE]))
    except (KeyError, ValueError, TypeError):
        return None


def family_of(meta: dict[str, Any], what: str = "the GGUF") -> str:
    """HF model_type of a GGUF's family: the adapter of its general.architecture (archs.adapter_for_gguf), or
    for a `deci` file adaprune-edge wrote, the per-layer family it recorded (a per-layer Qwen2 is `deci` too).
    ModelError listing the supported architectures for any other."""
    family = adapter_for_gguf(str(meta.get(gguf_keys.GENERAL_ARCHITECTURE, "?")), what).name
    stored = stored_structure(meta) if meta.get(gguf_keys.GENERAL_ARCHITECTURE) == PER_LAYER_ARCH else None
    if stored is not None and stored.family in ARCHS and ARCHS.get(stored.family).per_layer:
        return stored.family
    return family


def structure_of_gguf(path: str | Path) -> Structure:
    """The Structure of a GGUF of a supported family (uniform, or per-layer `deci`) from its header (no
    weights are read; ~0.1 s), so `--model x.gguf` needs no torch load."""
    try:
        meta, tensors = read_header(path)
        family = family_of(meta, f"GGUF {Path(path).name}")
        arch = meta["general.architecture"]
        n = int(meta[f"{arch}.block_count"])
        hidden = int(meta[f"{arch}.embedding_length"])
        heads = _per_layer(meta, f"{arch}.attention.head_count", n)
        kv = _per_layer(meta, f"{arch}.attention.head_count_kv", n)
        ff = _per_layer(meta, f"{arch}.feed_forward_length", n)
        names = {t.name: t.shape for t in tensors}
        vocab = int(names[tensor_name(TOKEN_EMBD)][0])
    except (KeyError, ValueError, TypeError, AdapruneError) as e:
        raise LatencyError(f"{path}: cannot read a model shape from this GGUF ({e})") from None
    head_dim = int(meta.get(f"{arch}.attention.key_length") or hidden // max(heads))
    layers = tuple(LayerShape(h, k, f) for h, k, f in zip(heads, kv, ff))
    return Structure(hidden, head_dim, vocab, n, tuple(range(n)), layers, tensor_name(OUTPUT) not in names, family)
