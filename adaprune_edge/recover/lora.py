"""LoRA adapters on the decoder projections, merged back into plain weights after training (the exported
GGUF stays a plain llama/deci file: no adapter tensors)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from adaprune_edge.archs import adapter_for
from adaprune_edge.gguf.names import PROJECTIONS


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) * B A x, with A [r, in] (Kaiming) and B [out, r] (zeros: starts as W)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        self.base = base
        self.scale = (alpha if alpha is not None else 2.0 * rank) / rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, w.shape[1], dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(w.shape[0], rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        self.base.weight += (self.lora_b @ self.lora_a).to(self.base.weight.dtype) * self.scale
        return self.base


def projections(model: Any) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(decoder layer, GGUF role, linear) of every non-empty decoder projection."""
    adapter = adapter_for(model)
    out = []
    for layer in adapter.layers(model):
        for role in PROJECTIONS:
            try:
                lin = adapter.linear(layer, role)
            except AttributeError:  # a layer without attention or MLP (pruned away)
                continue
            if isinstance(lin, nn.Linear) and lin.weight.numel() > 0:
                out.append((layer, role, lin))
    return out


def attach(model: Any, rank: int) -> list[LoRALinear]:
    """Wrap every decoder projection in a LoRALinear (rank capped at the projection's smaller side)."""
    adapter, wrapped = adapter_for(model), []
    for layer, role, lin in projections(model):
        w = LoRALinear(lin, min(rank, *lin.weight.shape))
        adapter.set_linear(layer, role, w)
        wrapped.append(w)
    return wrapped


def merge(model: Any) -> int:
    """Fold every LoRALinear back into its nn.Linear; returns how many were merged."""
    n = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, LoRALinear):
            parent_path, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_path), attr, mod.merged())
            n += 1
    return n
