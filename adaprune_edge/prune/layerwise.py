"""Layer-by-layer calibration: the hidden states of the calibration windows, carried through the decoder
one layer at a time (as SparseGPT does), so that only one layer's statistics are ever in memory.

`capture` runs the embeddings and stops at the first decoder layer, keeping its input per batch and the
keyword arguments the model passes to every layer (causal mask, rotary embeddings, positions).
`LayerInputs.run(layer, stats)` feeds them through one layer, optionally recording that layer's
statistics (statistics.LayerStats: activation sums, second moments, block influence), and returns the
outputs, which are the next layer's inputs. The LM head never runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from adaprune_edge.archs import ArchAdapter, adapter_for
from adaprune_edge.prune.statistics import ACT_SITES, CalibStats, LayerStats


class _Captured(Exception):
    """Raised by the first layer's pre-hook: the embeddings are done, the rest of the model is not needed."""


@dataclass
class LayerInputs:
    """Per calibration batch: the current hidden states [b, seq, hidden] and the per-layer kwargs; the
    model's adapter (archs) finds the projections whose inputs are recorded."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]
    adapter: ArchAdapter

    @property
    def n_tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h in self.hidden)

    def run(self, layer: nn.Module, stats: LayerStats | None = None) -> list[torch.Tensor]:
        """Outputs of `layer` for every batch; with `stats`, record its statistics on the way."""
        handles = []
        if stats is not None:
            for site, role in ACT_SITES.items():
                handles.append(self.adapter.linear(layer, role).register_forward_pre_hook(
                    lambda m, args, site=site: stats.add(site, args[0])))
        outs = []
        try:
            with torch.no_grad():
                for h, kw in zip(self.hidden, self.kwargs):
                    out = layer(h, **kw)
                    out = out[0] if isinstance(out, tuple) else out
                    if stats is not None:
                        cos = torch.nn.functional.cosine_similarity(h.float(), out.float(), dim=-1)
                        stats.bi_sum += float((1.0 - cos).sum())
                    outs.append(out.detach())
        finally:
            for handle in handles:
                handle.remove()
        return outs

    def advance(self, outputs: list[torch.Tensor]) -> None:
        """The outputs of one layer become the inputs of the next."""
        self.hidden = outputs


def capture(model: nn.Module, windows: torch.Tensor, batch_size: int = 1) -> LayerInputs:
    """Inputs of the first decoder layer for the windows [n, seq_len], in batches of `batch_size`."""
    store = LayerInputs([], [], adapter_for(model))

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        kw = dict(kwargs)
        h = args[0] if args else kw.pop("hidden_states")
        store.hidden.append(h.detach())
        store.kwargs.append(kw)
        raise _Captured

    handle = store.adapter.layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for start in range(0, windows.shape[0], batch_size):
                try:
                    model.model(input_ids=windows[start:start + batch_size], use_cache=False)
                except _Captured:
                    pass
    finally:
        handle.remove()
    return store


def dense_pass(model: nn.Module, windows: torch.Tensor, batch_size: int, need_gram: bool,
               reduce: Callable[[int, CalibStats], Any],
               progress: Callable[[int, int], None] | None = None) -> tuple[CalibStats, list[Any]]:
    """Statistics of every layer of the (dense) model, one layer at a time: `reduce(i, stats_of_layer_i)`
    runs while layer i's second moments exist (if `need_gram`); they are dropped before layer i+1, so
    the returned CalibStats has activation sums and block influence only. Returns (stats, reductions)."""
    inputs = capture(model, windows, batch_size)
    layers, reduced = [], []
    decoder = inputs.adapter.layers(model)
    n = len(decoder)
    for i, layer in enumerate(decoder):
        st = LayerStats(with_gram=need_gram)
        inputs.advance(inputs.run(layer, st))
        reduced.append(reduce(i, CalibStats([st], inputs.n_tokens, False, need_gram)))
        st.grams, st.with_gram = {}, False
        layers.append(st)
        if progress:
            progress(i + 1, n)
    return CalibStats(layers, inputs.n_tokens, False, False), reduced
