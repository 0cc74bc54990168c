"""Calibrate quantization error against what it does to the model: KL(dense ‖ model with one tensor
quantized) on calibration windows, measured in torch with the tensor's real llama.cpp-quantized values, for
a sample of tensors per role (first, middle and last layers). KL per unit of error (alpha) is interpolated
over depth for every other tensor of the role; the damage of a whole allocation is predicted as the sum
over tensors of alpha x error (first order: small perturbations add)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from adaprune_edge.archs import adapter_for
from adaprune_edge.gguf.names import TOKEN_EMBD, parse_name


def probe_tensors(names: Sequence[str], per_role: int = 4) -> list[str]:
    """The tensors to probe: per role, `per_role` layers spread over depth (first and last included),
    plus the token embedding."""
    by_role: dict[str, list[tuple[int, str]]] = {}
    for n in names:
        layer, role, _ = parse_name(n)
        if layer is not None:
            by_role.setdefault(role, []).append((layer, n))
    out = [n for n in names if parse_name(n)[1] == TOKEN_EMBD]
    for role, items in by_role.items():
        items.sort()
        picks = {round(k * (len(items) - 1) / max(1, per_role - 1)) for k in range(per_role)}
        out += [items[k][1] for k in sorted(picks)]
    return out


def _parameter(model: Any, name: str) -> torch.nn.Parameter:
    """The torch weight behind GGUF tensor `name` (a layer projection or the token embedding)."""
    layer, role, _ = parse_name(name)
    if layer is None:
        return model.get_input_embeddings().weight
    adapter = adapter_for(model)
    return adapter.linears(adapter.layers(model)[layer])[role].weight


@torch.no_grad()
def kl_probes(model: Any, windows: torch.Tensor, values: dict[str, np.ndarray], to_hf: Callable[[str, np.ndarray], np.ndarray],
              progress: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """KL(dense ‖ model with tensor t replaced by values[t]) per tensor, mean nats per position on `windows`.
    `to_hf` maps a GGUF-layout array to the torch weight's layout (Q/K rows unpermuted)."""
    ref = _logprobs(model, windows)
    out = {}
    for k, (name, arr) in enumerate(values.items()):
        p = _parameter(model, name)
        keep = p.data.clone()
        p.data.copy_(torch.from_numpy(np.ascontiguousarray(to_hf(name, arr))).to(p.dtype).reshape(p.shape))
        try:
            lp = _logprobs(model, windows)
        finally:
            p.data.copy_(keep)
        out[name] = float((ref.exp() * (ref - lp)).sum(-1).mean())
        if progress:
            progress(k + 1, len(values))
    return out


def _logprobs(model: Any, windows: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.log_softmax(model(w.unsqueeze(0)).logits[0, :-1].float(), -1) for w in windows])


def alphas(names: Sequence[str], errors: dict[str, float], kls: dict[str, float]) -> dict[str, float]:
    """KL per unit of error for every tensor in `names`: measured where probed (errors/kls of the probes),
    else interpolated in log space over the layers probed for the tensor's role (the role's median where
    it has no probe)."""
    ratio = {n: max(kls[n], 1e-12) / max(errors[n], 1e-12) for n in kls if errors.get(n, 0) > 0}
    by_role: dict[str, list[tuple[int, float]]] = {}
    for n, a in ratio.items():
        layer, role, _ = parse_name(n)
        by_role.setdefault(role, []).append((layer if layer is not None else 0, math.log(a)))
    fallback = float(np.median(list(ratio.values()))) if ratio else 1.0
    out = {}
    for n in names:
        layer, role, _ = parse_name(n)
        pts = sorted(by_role.get(role, []))
        if n in ratio:
            out[n] = ratio[n]
        elif pts:
            out[n] = float(math.exp(np.interp(layer or 0, [p[0] for p in pts], [p[1] for p in pts])))
        else:
            out[n] = fallback
    return out

