"""Depth pruning: choose whole decoder layers to drop by block influence (ShortGPT).

Block influence of a layer = mean over calibration tokens of 1 − cos(layer input, layer output): a
layer that barely turns the residual stream matters little. The lowest-influence unprotected layers go.
"""

from __future__ import annotations

import torch


def layers_to_drop(influence: torch.Tensor, layer_params: list[int], budget: float, protected: set[int]) -> list[int]:
    """Positions of the lowest-influence unprotected layers whose parameters sum closest to `budget`
    (a layer is dropped while that brings the total closer to the budget). Returns sorted positions."""
    order = [int(i) for i in torch.argsort(influence, stable=True) if int(i) not in protected]
    dropped: list[int] = []
    spent = 0.0
    for i in order:
        if spent + layer_params[i] / 2 > budget or len(dropped) + len(protected) + 1 >= len(layer_params):
            break
        dropped.append(i)
        spent += layer_params[i]
    return sorted(dropped)
