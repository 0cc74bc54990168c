"""The Structure of a llama-family GGUF file, read from its header alone (no weights; ~0.1 s)."""

from __future__ import annotations

from pathlib import Path

from adaprune_edge.errors import AdapruneError, LatencyError
from adaprune_edge.gguf.header import read_header
from adaprune_edge.gguf.names import OUTPUT, TOKEN_EMBD, tensor_name
from adaprune_edge.archs.structure import LayerShape, Structure


def _per_layer(meta: dict, key: str, n: int) -> list[int]:
    value = meta[key]
    return [int(v) for v in value] if isinstance(value, list) else [int(value)] * n


def structure_of_gguf(path: str | Path) -> Structure:
    """The Structure of a llama/deci GGUF from its header (no weights are read; ~0.1 s), so
    `--model x.gguf` needs no torch load."""
    try:
        meta, tensors = read_header(path)
        arch = meta["general.architecture"]
        n = int(meta[f"{arch}.block_count"])
        hidden = int(meta[f"{arch}.embedding_length"])
        heads = _per_layer(meta, f"{arch}.attention.head_count", n)
        kv = _per_layer(meta, f"{arch}.attention.head_count_kv", n)
        ff = _per_layer(meta, f"{arch}.feed_forward_length", n)
        names = {t.name: t.shape for t in tensors}
        vocab = int(names[tensor_name(TOKEN_EMBD)][0])
    except (KeyError, ValueError, TypeError, AdapruneError) as e:
        raise LatencyError(f"{path}: cannot read a llama-family shape from this GGUF ({e})") from None
    head_dim = int(meta.get(f"{arch}.attention.key_length") or hidden // max(heads))
    layers = tuple(LayerShape(h, k, f) for h, k, f in zip(heads, kv, ff))
    return Structure(hidden, head_dim, vocab, n, tuple(range(n)), layers, tensor_name(OUTPUT) not in names)
