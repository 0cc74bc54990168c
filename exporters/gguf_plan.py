"""The tensor plan of a GGUF file: architecture, names, shapes, types, bytes — and where the data comes from.

The architecture and the per-layer tensor list come from the model family's adapter (archs): a uniform
structure keeps the family's own llama.cpp architecture (`llama`, `qwen2`, `qwen3`, `gemma3`), per-layer
widths go to `deci` where the family maps onto it exactly (llama.cpp builds per-layer shapes only there).
Tied embeddings: only token_embd is written (llama.cpp reuses it as the output). Biases are carried where
the target graph adds them (archs.base.CARRIED_BIASES); any other bias is refused rather than dropped.

A tensor source is a callable GGUF name → float32 ndarray: `torch_source(model, plan)` for real weights
(Q/K rows permuted, norms shifted as the target architecture needs), `random_source()` for shape-only files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as QT

from adaprune_edge.archs import ARCHS, HParams, adapter_for
from adaprune_edge.archs.base import OUTPUT, OUTPUT_NORM, ROPE_FREQS, TOKEN_EMBD, permute_qk
from adaprune_edge.errors import ExportError
from adaprune_edge.gguf.tensor import GGUFTensor
from adaprune_edge.archs.structure import Structure

__all__ = ["FLOAT_TYPES", "ExportPlan", "HParams", "TensorSource", "iter_plan_rows",
           "model_biases", "permute_qk", "plan", "plan_for_model", "random_source", "torch_source"]

FLOAT_TYPES = {"F16": QT.F16, "F32": QT.F32}
TensorSource = Callable[[str], np.ndarray]


@dataclass(frozen=True)
class ExportPlan:
    """Everything that will be written: llama.cpp architecture, model family (HF model_type), shape,
    hyper-parameters, tensors, carried biases."""

    arch: str
    structure: Structure
    hparams: HParams
    tensors: tuple[GGUFTensor, ...]
    biases: tuple[str, ...] = ()
    family: str = "llama"

    @property
    def data_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "family": self.family, "structure": self.structure.to_dict(),
                "hparams": self.hparams.to_dict(), "tensors": [t.to_dict() for t in self.tensors],
                "biases": list(self.biases), "data_bytes": self.data_bytes}


def plan(structure: Structure, hparams: HParams, float_type: str = "F16", biases: tuple[str, ...] = (),
         family: str = "llama") -> ExportPlan:
    """The tensor list for `structure` of model family `family`: 2-D weights in `float_type`, norms,
    biases and RoPE factors in F32."""
    if float_type not in FLOAT_TYPES:
        raise ExportError(f"unknown float type {float_type!r}; known: {', '.join(FLOAT_TYPES)}")
    adapter = ARCHS.get(family)
    arch = adapter.gguf_arch_for(structure, biases)
    wtype, h, d = FLOAT_TYPES[float_type], structure.hidden, structure.head_dim
    tensors = [GGUFTensor(f"{TOKEN_EMBD}.weight", (structure.vocab, h), wtype)]
    if hparams.rope_freqs:
        tensors.append(GGUFTensor(f"{ROPE_FREQS}.weight", (len(hparams.rope_freqs),), QT.F32))
    for i, s in enumerate(structure.layers):
        for role, shape in adapter.layer_tensors(s, h, d):
            tensors.append(GGUFTensor(f"blk.{i}.{role}.weight", shape, wtype if len(shape) == 2 else QT.F32))
            if f"blk.{i}.{role}.bias" in biases:
                tensors.append(GGUFTensor(f"blk.{i}.{role}.bias", (shape[0],), QT.F32))
    tensors.append(GGUFTensor(f"{OUTPUT_NORM}.weight", (h,), QT.F32))
    if not structure.tied_embeddings:
        tensors.append(GGUFTensor(f"{OUTPUT}.weight", (structure.vocab, h), wtype))
    return ExportPlan(arch, structure, hparams, tuple(tensors), tuple(sorted(biases)), family)


def model_biases(model: Any) -> tuple[str, ...]:
    """GGUF names of the model's projection biases; ExportError for a bias no llama.cpp graph adds
    (norm biases)."""
    adapter = adapter_for(model)
    found = []
    for name, _ in model.named_parameters():
        if not name.endswith(".bias"):
            continue
        parts = name.split(".")
        role = adapter.gguf_role(".".join(parts[3:-1])) if name.startswith("model.layers.") else None
        if role is None or role.endswith("norm"):
            raise ExportError(f"bias {name} has no place in llama.cpp's graphs; fold it first (refusing to drop it)")
        found.append(f"blk.{parts[2]}.{role}.bias")
    return tuple(found)


def plan_for_model(model: Any, float_type: str = "F16") -> ExportPlan:
    """Plan for a supported HF (pruned) model: its Structure, its family's HParams, its carried biases."""
    adapter = adapter_for(model, "cannot export: the model")
    adapter.check_config(model.config)
    adapter.check_model(model)
    return plan(Structure.from_model(model), adapter.hparams(model.config), float_type, model_biases(model),
                adapter.name)


def torch_source(model: Any, p: ExportPlan) -> TensorSource:
    """Tensor source over an HF model's state dict, as `p.arch` reads it (float32 ndarrays)."""
    import torch

    adapter = ARCHS.get(p.family)
    state = dict(model.named_parameters())
    state.update(dict(model.named_buffers()))

    def get(name: str) -> np.ndarray:
        if name == f"{ROPE_FREQS}.weight":
            return np.asarray(p.hparams.rope_freqs, dtype=np.float32)
        hf = adapter.hf_name(name)
        if hf not in state:
            raise ExportError(f"the model has no tensor {hf} (needed for {name})")
        with torch.no_grad():
            arr = state[hf].detach().to(torch.float32).cpu().numpy()
        return adapter.to_gguf(name, arr, p.structure, p.arch)

    return get


def random_source(seed: int = 0, std: float = 0.02) -> TensorSource:
    """Shape-only source: N(0, std) weights, ones for norms and RoPE factors, zeros for biases (values never
    matter for latency; shapes do). Shapes come from the plan at write time."""
    rng = np.random.default_rng(seed)

    def get(name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        if name.endswith("norm.weight") or name == f"{ROPE_FREQS}.weight":
            return np.ones(shape, np.float32)
        if name.endswith(".bias"):
            return np.zeros(shape, np.float32)
        return (rng.standard_normal(shape, dtype=np.float32) * std)

    get.shape_only = True  # type: ignore[attr-defined]
    return get


def iter_plan_rows(p: ExportPlan) -> Iterator[tuple[str, str, str, int]]:
    """(name, shape, type, bytes) rows for a --dry-run table."""
    for t in p.tensors:
        yield t.name, "×".join(map(str, t.shape)), t.qtype.name, t.n_bytes
