"""Compensation for removed input channels of an output projection (o_proj: head features, down_proj:
FFN channels), from calibration statistics of its input x. Two kinds:

- bias (FLAP): the output loses W[:, J] · x_J; replacing x_J by its calibration mean keeps the expected
  output: bias += W[:, J] · mean(x_J).
- least squares: refit the kept columns K (and a bias) so that W' x_K + b' best matches the dense W x
  over the calibration tokens (ridge regression with intercept, closed form from E[x] and E[x xᵀ]):
      C = E[x xᵀ] - μ μᵀ,   W' = (W C[:, K] + λ W[:, K]) (C[K, K] + λ I)⁻¹,   b' = W μ - W' μ_K
  with λ = damp × mean diag C[K, K]: a ridge pulling W' towards the original columns (large damp → bias
  compensation only). With nothing removed W' = W and b' = 0. No gradient steps: it is a
  one-shot, per-layer refit on the dense model's activations (like FLAP's bias, a stronger form of it).
The bias lives on o_proj / down_proj (`pruning.add_output_bias`), where the exporter writes it.
"""

from __future__ import annotations

import torch
from torch import nn

from adaprune_edge.archs.slicing import add_output_bias


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


def reconstruct(linear: nn.Linear, keep_cols: list[int], mean_in: torch.Tensor, second_moment: torch.Tensor,
                damp: float = 0.3) -> None:
    """Least-squares refit of the kept columns of `linear` plus a bias (call before slicing its columns)."""
    if len(keep_cols) == linear.in_features:
        return
    keep = torch.tensor(sorted(keep_cols), dtype=torch.long)
    mu = mean_in.double()
    cov = second_moment.double() - torch.outer(mu, mu)
    ckk = cov[keep][:, keep]
    lam = damp * float(ckk.diagonal().mean().clamp_min(1e-12))
    ckk = ckk + lam * torch.eye(len(keep), dtype=torch.float64)
    w = linear.weight.detach().double()
    target = w @ cov[:, keep] + lam * w[:, keep]                   # [out, |K|]
    w_new = torch.linalg.solve(ckk, target.T).T                    # (W C[:,K] + λ W_K) (C[K,K] + λI)^-1
    bias = w @ mu - w_new @ mu[keep]
    with torch.no_grad():
        linear.weight[:, keep] = w_new.to(linear.weight.dtype)
    add_output_bias(linear, bias)
