"""A GGUF file as a float32 HF model with its tokenizer.

Native llama.cpp architectures go through transformers' GGUF loader (config from the metadata, dequantized
weights, tokenizer converted from tokenizer.ggml.*), with the two settings its config leaves at defaults that
llama.cpp does not use: the file's head_dim (attention.key_length; Qwen3's 128 ≠ hidden / heads) and queries
scaled by 1/√head_dim (Gemma 3's query_pre_attn_scalar). `deci` files (per-layer widths, written by the exporter
for non-uniform pruned models) transformers cannot build: they are rebuilt here — the config from the metadata,
a skeleton with the file's per-layer shapes (archs.slicing), the weights dequantized with gguf-py, Q/K rows put
back in HF's rotate-half order and norms unshifted (the inverse of ArchAdapter.to_gguf)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from adaprune_edge.archs.base import PER_LAYER_ARCH, ArchAdapter
from adaprune_edge.archs.gguf_structure import stored_structure, structure_of_gguf
from adaprune_edge.archs.registry import ARCHS
from adaprune_edge.archs.slicing import skeleton
from adaprune_edge.archs.structure import Structure
from adaprune_edge.errors import LatencyError, ModelError
from adaprune_edge.gguf import keys as gguf_keys
from adaprune_edge.gguf.names import ROPE_FREQS, tensor_name


def load_gguf(path: Path, meta: dict[str, Any], family: str) -> tuple[Any, Any]:
    """(float32 HF model, tokenizer) of the GGUF at `path` with header `meta`, a model of `family` (HF
    model_type, gguf_structure.family_of); ModelError in one line when it cannot be loaded."""
    arch = str(meta[gguf_keys.GENERAL_ARCHITECTURE])
    try:
        if arch == PER_LAYER_ARCH:
            model, tok = _load_per_layer(path, meta, ARCHS.get(family))
        else:
            model, tok = _load_native(path, meta)
    except ModelError:
        raise
    except Exception as e:  # transformers, tokenizers and gguf-py raise many unrelated types
        lines = str(e).strip().splitlines()
        raise ModelError(f"cannot load GGUF {path.name} ({type(e).__name__}: {lines[0][:200] if lines else ''}); "
                         "load the model's HF folder or hub id instead") from None
    ARCHS.get(family).check_config(model.config)
    return model, tok


def _load_native(path: Path, meta: dict[str, Any]) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where, name = str(path.parent), path.name
    config = AutoConfig.from_pretrained(where, gguf_file=name)
    key_length = meta.get(f"{meta[gguf_keys.GENERAL_ARCHITECTURE]}.attention.key_length")
    if key_length:
        config.head_dim = int(key_length)
    if hasattr(config, "query_pre_attn_scalar"):  # llama.cpp scales queries by 1/√head_dim
        config.query_pre_attn_scalar = config.head_dim
    model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, config=config, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return model, AutoTokenizer.from_pretrained(where, gguf_file=name)


def _structure(path: Path, meta: dict[str, Any], family: str) -> Structure:
    """The file's per-layer shapes; the kept layers adaprune-edge recorded when it wrote the file."""
    try:
        header = structure_of_gguf(path)
    except LatencyError as e:
        raise ModelError(str(e)) from None
    stored = stored_structure(meta)
    same = stored is not None and (stored.hidden, stored.head_dim, stored.vocab, stored.layers) == (
        header.hidden, header.head_dim, header.vocab, header.layers)
    return dataclasses.replace(stored if same else header, family=family)


def _config(path: Path, structure: Structure, family: str) -> Any:
    """An HF config of `family` from the file's metadata (transformers' GGUF key mapping), scalar widths."""
    from transformers import AutoConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg = dict(load_gguf_checkpoint(str(path), return_tensors=False)["config"])
    cfg.pop("model_type", None)
    first = structure.layers[0]
    cfg.update(num_attention_heads=first.n_head, num_key_value_heads=first.n_head_kv, intermediate_size=first.n_ff,
               head_dim=structure.head_dim, tie_word_embeddings=structure.tied_embeddings)
    return AutoConfig.for_model(family, **cfg)


def _load_per_layer(path: Path, meta: dict[str, Any], adapter: ArchAdapter) -> tuple[Any, Any]:
    import gguf
    import torch
    from transformers import TokenizersBackend

    if any(k.startswith(f"{PER_LAYER_ARCH}.rope.scaling.") for k in meta):
        raise ModelError(f"GGUF {path.name} has scaled RoPE, which cannot be turned back into HF RoPE parameters")
    structure = _structure(path, meta, adapter.name)
    model = skeleton(_config(path, structure, adapter.name), structure)
    state = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name == tensor_name(ROPE_FREQS):
            raise ModelError(f"GGUF {path.name} has Llama 3 RoPE factors ({t.name}), which cannot be turned back "
                             "into HF RoPE parameters")
        arr = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        hf = adapter.hf_name(t.name)
        state[hf] = torch.from_numpy(np.array(_to_hf(adapter, t.name, arr, structure), np.float32))  # a copy
        if hf.endswith(".bias") and model.get_submodule(hf[: -len(".bias")]).bias is None:
            model.get_submodule(hf[: -len(".bias")]).bias = torch.nn.Parameter(torch.zeros_like(state[hf]))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and structure.tied_embeddings)]
    if missing or unexpected:
        raise ModelError(f"GGUF {path.name}: tensors do not match its shapes (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    if structure.tied_embeddings:
        model.tie_weights()
    return model.eval(), TokenizersBackend.from_pretrained(str(path.parent), gguf_file=path.name)


def _to_hf(adapter: ArchAdapter, name: str, arr: np.ndarray, structure: Structure) -> np.ndarray:
    """Undo ArchAdapter.to_gguf for `deci`: norms unshifted, Q/K rows back in HF's rotate-half order."""
    return adapter.from_gguf(name, arr, structure, "deci")
