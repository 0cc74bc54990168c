"""Prunable units and their components: which rows/columns of which projection a query head, a KV
group or an FFN channel owns, and the reduction of per-weight importance to one score per unit."""

from __future__ import annotations

import torch

ROW_COMPONENTS = ("q", "k", "v", "gate", "up")
SITE_OF = {"q": "attn_in", "k": "attn_in", "v": "attn_in", "o": "o_in", "gate": "mlp_in", "up": "mlp_in",
           "down": "down_in"}
HEAD_COMPS, GROUP_COMPS, FFN_COMPS = ("q", "o"), ("q", "k", "v", "o"), ("gate", "up", "down")


def reduce_component(comp: str, elem: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Per-weight importance of one projection → one score per unit (head for q/k/v/o, channel for FFN)."""
    per = elem.sum(1) if comp in ROW_COMPONENTS else elem.sum(0)
    if comp in ("q", "k", "v", "o"):
        per = per.view(-1, head_dim).sum(1)
    return per.double()
