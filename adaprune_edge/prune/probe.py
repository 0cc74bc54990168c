"""Structure probe: the Structure a recipe would give at any ratio, without slicing the model.

Statistics and unit scores are computed once (through the ImportanceCache, so a later `prune()` with the
same recipe is a cache hit); every `at(ratio)` then runs only the allocation (`engine.removal_plan`) and
shape arithmetic — milliseconds, not a forward pass. The ratio solver (search/ratio.py) bisects on it."""

from __future__ import annotations

import dataclasses
from typing import Any

from adaprune_edge.prune.engine import PrunePlan, PruneConfig, calibration_windows, check_architecture, removal_plan
from adaprune_edge.prune.calibration_pass import statistics_for
from adaprune_edge.prune.importance import ImportanceCache
from adaprune_edge.data.calibration import windows_key
from adaprune_edge.archs.structure import LayerShape, Structure

PROBE_RATIO = 0.5  # any ratio > 0: makes needs_calibration reflect the recipe, not the ratio


def plan_structure(before: Structure, plan: PrunePlan) -> Structure:
    """The Structure `engine.apply_plan(plan)` gives a model of structure `before` (no weights touched)."""
    layers, kept = [], []
    for i, shape in enumerate(before.layers):
        if i in plan.dropped:
            continue
        lp = plan.layers.get(i)
        layers.append(shape if lp is None else
                      LayerShape(sum(len(q) for q in lp.q_keep), len(lp.kv_keep), len(lp.ff_keep)))
        kept.append(before.kept_layers[i])
    return dataclasses.replace(before, kept_layers=tuple(kept), layers=tuple(layers))


class StructureProbe:
    """`at(ratio)`: the Structure of `model` pruned by `config` with that ratio (config.ratio ignored)."""

    def __init__(self, model: Any, calib: Any, config: PruneConfig, cache: ImportanceCache) -> None:
        cfg = dataclasses.replace(config, ratio=PROBE_RATIO)
        cfg.validate()
        check_architecture(model)
        self.model, self.config, self.calls = model, config, 0
        self.before = Structure.from_model(model)
        self.stats, key, scores = None, "none", None
        if cfg.needs_calibration:  # the same pass prune() runs (second moments for obs, none for some sequential)
            windows = calibration_windows(model, calib, cfg)
            key = windows_key(windows)
            self.stats, scores, _ = statistics_for(model, windows, key, cfg, cache, None)
        self.scores = scores if scores is not None else cache.scores(model, self.stats, key, cfg.metric,
                                                                     cfg.aggregation, cfg.seed)

    def at(self, ratio: float) -> Structure:
        self.calls += 1
        cfg = dataclasses.replace(self.config, ratio=ratio)
        return plan_structure(self.before, removal_plan(self.model, self.before, self.scores, self.stats, cfg))
