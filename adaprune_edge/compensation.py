"""Bias compensation (FLAP): fold the mean contribution of removed input channels into a bias.

When columns J of an output projection (o_proj: attention head features, down_proj: FFN channels) are
removed, the output loses W[:, J] · x_J. Replacing x_J by its calibration mean keeps the expected output
unchanged: bias += W[:, J] · mean(x_J). The bias lives on o_proj / down_proj (`pruning.add_output_bias`),
where the exporter writes it.
"""

from __future__ import annotations

import torch
from torch import nn

from adaprune_edge.pruning import add_output_bias


def removed_columns(keep: list[int], n: int) -> torch.Tensor:
    kept = set(keep)
    return torch.tensor([j for j in range(n) if j not in kept], dtype=torch.long)


def compensate(linear: nn.Linear, keep_cols: list[int], mean_in: torch.Tensor) -> None:
    """Add W[:, removed] @ mean_in[removed] to `linear`'s bias (call before slicing its columns)."""
    gone = removed_columns(keep_cols, linear.in_features)
    if gone.numel() == 0:
        return
    w = linear.weight.detach()
    add_output_bias(linear, w[:, gone].double() @ mean_in[gone].double())
