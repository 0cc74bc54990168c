"""Which calibration pass a prune needs, and its result: statistics and unit scores from the cache (one
full-model pass, with gradients / second moments as the metric and update need), a layer-by-layer pass
over the dense model (sequential pruning with a gradient-free metric), or none (sequential + uniform:
the sequential pass itself measures every layer)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from adaprune_edge.prune.importance import METRICS, ImportanceCache, model_scores, needs, needs_gram
from adaprune_edge.prune.sequential import dense_scores, needs_dense_pass


def statistics_for(model: nn.Module, windows: torch.Tensor, key: str, config: Any, cache: ImportanceCache,
                progress: Callable[[int, int], None] | None) -> tuple[Any, list | None, bool]:
    """(calibration statistics, unit scores or None = score from the statistics, cache hit). Sequential
    runs with a gradient-free metric score the dense model layer by layer (no second moments kept)."""
    grad = needs(config.metric)[0]
    if config.sequential and not grad and METRICS.get(config.metric).needs_act and not needs_dense_pass(config):
        return None, model_scores(model, None, "l1", config.aggregation), True
    if config.sequential and not grad:
        cached = cache.cached_scores(key, config.metric, config.aggregation, config.seed)
        if cached is not None:
            return cache.stats(model, windows, key, False, config.batch_size), cached, True
        stats, scores = dense_scores(model, windows, config, progress)
        cache.put(key, stats)
        cache.put_scores(key, config.metric, config.aggregation, config.seed, scores)
        return stats, scores, False
    misses = cache.misses
    gram = not config.sequential and (config.reconstruction or needs_gram(config.metric))
    stats = cache.stats(model, windows, key, grad, config.batch_size, progress, need_gram=gram)
    return stats, None, cache.misses == misses
