"""CalibStats: what one calibration pass over the dense model records, per decoder layer.

Activation statistics (per input column of the projections: sum and sum of squares over tokens), block
influence (mean 1 - cos(layer input, layer output) over tokens, ShortGPT) and, when gradients are needed,
per-unit Taylor scores of every gradient metric (reduced right after the backward passes, so the
gradients themselves are not kept). One pass serves every metric, allocation and compensation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from adaprune_edge.prune.units import reduce_component

from adaprune_edge.archs import adapter_for
from adaprune_edge.gguf.names import ATTN_K, ATTN_OUT, ATTN_Q, ATTN_V, FFN_DOWN, FFN_GATE, FFN_UP

# input-column groups → the GGUF role whose input is recorded: q/k/v share the attention input, gate/up
# the MLP input (the modules come from the model's adapter)
ACT_SITES = {"attn_in": ATTN_Q, "o_in": ATTN_OUT, "mlp_in": FFN_GATE, "down_in": FFN_DOWN}
GRAD_METRICS = ("taylor", "taylor2")
GRAM_SITES = ("o_in", "down_in")  # inputs of the output projections: least-squares reconstruction
# importance components (prune/units.py) → GGUF role of their projection
Linears = Mapping[str, nn.Linear]  # GGUF role → projection of one layer (ArchAdapter.linears)
COMPONENTS = {"q": ATTN_Q, "k": ATTN_K, "v": ATTN_V, "o": ATTN_OUT, "gate": FFN_GATE, "up": FFN_UP, "down": FFN_DOWN}


@dataclass
class LayerStats:
    """Sums over calibration tokens for one decoder layer (float64)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)     # site -> Σx   [cols]
    sumsq: dict[str, torch.Tensor] = field(default_factory=dict)    # site -> Σx²  [cols]
    bi_sum: float = 0.0                                             # Σ (1 - cos(in, out))
    grad_units: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # metric -> comp -> units
    grams: dict[str, torch.Tensor] = field(default_factory=dict)    # site -> Σ x xᵀ [cols, cols] (float32)
    with_gram: bool = False

    def add(self, site: str, x: torch.Tensor) -> None:
        """Fold one batch of inputs [.., cols] into the sums: per batch in float32 (a batch is a few hundred
        tokens; Σx² of a Gram site is its second moment's diagonal), across batches in float64."""
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if self.with_gram and site in GRAM_SITES:
            g = x.T @ x
            if site in self.grams:
                self.grams[site] += g
            else:
                self.grams[site] = g
            q = torch.diagonal(g).double()
        else:
            q = (x * x).sum(0).double()
        s = x.sum(0).double()
        if site in self.sums:
            self.sums[site] += s
            self.sumsq[site] += q
        else:
            self.sums[site], self.sumsq[site] = s, q


@dataclass
class CalibStats:
    """Statistics of one calibration set (n_tokens tokens) on the dense model."""

    layers: list[LayerStats]
    n_tokens: int
    has_grad: bool
    has_gram: bool = False

    def mean(self, layer: int, site: str) -> torch.Tensor:
        """Mean input per column (for bias compensation)."""
        return self.layers[layer].sums[site] / self.n_tokens

    def sq_norm(self, layer: int, site: str) -> torch.Tensor:
        """‖X_j‖² per input column j over all calibration tokens (Wanda)."""
        return self.layers[layer].sumsq[site]

    def var(self, layer: int, site: str) -> torch.Tensor:
        """Variance per input column over tokens (FLAP fluctuation)."""
        m = self.mean(layer, site)
        return (self.layers[layer].sumsq[site] / self.n_tokens - m * m).clamp_min(0.0)

    def second_moment(self, layer: int, site: str) -> torch.Tensor:
        """E[x xᵀ] over calibration tokens (float64) for a GRAM_SITES site; needs collect(need_gram=True)."""
        return self.layers[layer].grams[site].double() / self.n_tokens

    def block_influence(self) -> torch.Tensor:
        """Per layer mean of 1 - cos(input, output) over tokens (ShortGPT); low = removable."""
        return torch.tensor([s.bi_sum / self.n_tokens for s in self.layers])


def _hooks(model: nn.Module, stats: list[LayerStats]) -> list[Any]:
    handles = []
    adapter = adapter_for(model)
    for i, layer in enumerate(adapter.layers(model)):
        for site, role in ACT_SITES.items():
            mod = adapter.linear(layer, role)
            handles.append(mod.register_forward_pre_hook(
                lambda m, args, st=stats[i], site=site: st.add(site, args[0])))
        handles.append(layer.register_forward_hook(_bi_hook(stats[i]), with_kwargs=True))
    return handles


def _bi_hook(st: LayerStats) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        h_in = args[0] if args else kwargs["hidden_states"]
        h_out = out[0] if isinstance(out, tuple) else out
        cos = torch.nn.functional.cosine_similarity(h_in.detach().float(), h_out.detach().float(), dim=-1)
        st.bi_sum += float((1.0 - cos).sum())
    return hook


def _decoder_linears(model: nn.Module) -> list[nn.Parameter]:
    adapter = adapter_for(model)
    return [adapter.linear(layer, r).weight for layer in adapter.layers(model) for r in COMPONENTS.values()]


def collect(model: nn.Module, windows: torch.Tensor, need_grad: bool, batch_size: int = 1,
            progress: Callable[[int, int], None] | None = None, need_gram: bool = False) -> CalibStats:
    """Run the calibration windows [n, seq_len] through `model` (batches of `batch_size`), recording
    activation statistics, block influence, if `need_grad` Taylor unit scores and, if `need_gram`, the
    second moments of the output projections' inputs (~10 MB per layer for the default model). The
    model's parameters are left as found (no .grad, same requires_grad flags)."""
    stats = [LayerStats(with_gram=need_gram) for _ in adapter_for(model).layers(model)]
    flags = {p: p.requires_grad for p in model.parameters()}
    linears = _decoder_linears(model) if need_grad else []
    acc = {p: (torch.zeros_like(p), torch.zeros_like(p)) for p in linears}
    handles = _hooks(model, stats) + _grad_hooks(acc)
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in linears:
            p.requires_grad_(True)
            p.grad = None
        _run_batches(model, windows, need_grad, batch_size, progress)
        if need_grad:
            _grad_units(model, stats, acc)
    finally:
        for h in handles:
            h.remove()
        for p, f in flags.items():
            p.grad = None
            p.requires_grad_(f)
    return CalibStats(stats, int(windows.numel()), need_grad, need_gram)


def _grad_hooks(acc: dict[nn.Parameter, tuple[torch.Tensor, torch.Tensor]]) -> list[Any]:
    """Fold each parameter's batch gradient into (Σg, Σg²) as soon as it is ready and free it, so no
    full set of gradients is ever held next to the two accumulators."""
    def fold(p: nn.Parameter) -> None:
        gsum, gsq = acc[p]
        gsum.add_(p.grad)
        gsq.addcmul_(p.grad, p.grad)  # batch-level squared gradients: a diagonal Fisher estimate
        p.grad = None
    return [p.register_post_accumulate_grad_hook(fold) for p in acc]


def _run_batches(model: nn.Module, windows: torch.Tensor, need_grad: bool, batch_size: int,
                 progress: Callable[[int, int], None] | None) -> None:
    n = windows.shape[0]
    for start in range(0, n, batch_size):
        batch = windows[start:start + batch_size]
        with torch.set_grad_enabled(need_grad):
            out = model(input_ids=batch, labels=batch if need_grad else None, use_cache=False)
        if need_grad:
            out.loss.backward()
        del out
        if progress:
            progress(min(start + batch_size, n), n)


def _grad_units(model: nn.Module, stats: list[LayerStats],
                acc: dict[nn.Parameter, tuple[torch.Tensor, torch.Tensor]]) -> None:

    head_dim, adapter = _head_dim(model), adapter_for(model)
    for layer, st in zip(adapter.layers(model), stats):
        for metric in GRAD_METRICS:
            st.grad_units[metric] = {}
        for comp, role in COMPONENTS.items():
            w = adapter.linear(layer, role).weight
            gsum, gsq = acc.pop(w)
            wd = w.detach()
            wg = wd * gsum
            st.grad_units["taylor"][comp] = reduce_component(comp, wg.abs(), head_dim)
            mixed = wg - 0.5 * wd * gsq * wd  # LLM-Pruner "param_mix": first + diagonal second order
            st.grad_units["taylor2"][comp] = reduce_component(comp, mixed.abs(), head_dim)


def _head_dim(model: nn.Module) -> int:
    return adapter_for(model).head_dim(model.config)
