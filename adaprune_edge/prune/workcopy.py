"""The working copy a non-inplace prune slices: module structure copied, weights shared.

A full `copy.deepcopy` per search trial doubled the model in memory (the tied embedding alone is 21% of
the default model). Slicing never writes into a weight: it builds new, smaller `nn.Linear`s. Only the
output projections of pruned layers are written in place (OBS update, least-squares reconstruction,
bias compensation), so only those are copied; every other parameter and buffer is shared with the
dense model: neither may be modified in place (no `.half()` / `.to(dtype)` on either) while both live.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from adaprune_edge.archs import adapter_for
from adaprune_edge.gguf.names import ATTN_OUT, FFN_DOWN

WRITTEN = (ATTN_OUT, FFN_DOWN)  # GGUF roles of the projections written in place


def working_copy(model: nn.Module, layers: Iterable[int]) -> nn.Module:
    """A copy of `model` sharing all tensors except the output projections of decoder `layers`."""
    adapter = adapter_for(model)
    decoder = adapter.layers(model)
    own = {id(p) for i in layers for role in WRITTEN for p in adapter.linear(decoder[i], role).parameters()}
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers()) if id(t) not in own}
    with torch.no_grad():
        return copy.deepcopy(model, memo)
