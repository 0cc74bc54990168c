"""The search objective: one trial = solve the recipe's smallest ratio meeting the budget (at the trial's
quant recipe), prune a copy in memory at it, check the budget on its actual Structure, score validation
loss (or KL to the dense model) on the objective windows, plus the quant recipe's measured penalty."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

import torch

from adaprune_edge.search.space import to_prune_config
from adaprune_edge.search.spec import PENALTY, SearchSpec
from adaprune_edge.search.trials import TrialRecord
from adaprune_edge import models
from adaprune_edge.data import textsets
from adaprune_edge.data.calibration import CalibrationPool
from adaprune_edge.latency.budget import budget_ok, ffn_align
from adaprune_edge.latency.predictor import Predictor
from adaprune_edge.prune.engine import MAX_RATIO, PruneConfig, prune
from adaprune_edge.prune.probe import StructureProbe
from adaprune_edge.search.race import Race
from adaprune_edge.search.ratio import RatioSolution, predicted_fit, solve_ratio
from adaprune_edge.prune.importance import ImportanceCache
from adaprune_edge.quant import QuantRecipe


DATA_FIELDS = ("model", "calib", "val", "holdout", "val_windows", "val_seq_len", "report_windows")


class SearchContext:
    """In-memory objects of one search process: dense model, calibration pools, validation windows,
    dense reference log-probs (for KL), importance cache, and the spec's Device (settings included)."""

    def __init__(self, spec: SearchSpec, loaded: Any | None = None, progress: Any = None) -> None:

        self.spec = spec
        self.loaded = loaded or models.load(spec.model)
        self.model = self.loaded.model
        self.profile = spec.profile
        self.device = spec.device
        self.cache = ImportanceCache()
        self.bounds = spec.bounds
        self.progress = progress  # (done, total, note) while builtin:self generates (first time per model)
        self.pools, self.val = self._data()
        self._ref: dict[tuple[str, int], torch.Tensor] = {}
        self._kept: tuple[str, Any] | None = None  # (trial key, PruneResult) of the search's current choice

    def derive(self, spec: SearchSpec) -> "SearchContext":
        """A context for another spec over the same data (quant, ratio bounds, objective may differ): shares
        the model, calibration pools, objective/report windows and importance cache, so nothing is
        tokenized or generated again."""
        mine, theirs = self.spec, spec
        same = [getattr(mine, f) == getattr(theirs, f) for f in DATA_FIELDS]
        if not all(same) or mine.bounds.max_seq_len != theirs.bounds.max_seq_len:
            raise ValueError("derive() needs the same data fields: " + ", ".join(DATA_FIELDS))
        other = copy.copy(self)
        other.spec, other.bounds, other.profile, other.device = spec, spec.bounds, spec.profile, spec.device
        other._ref = self._ref if spec.objective == mine.objective else {}
        return other

    def forget_statistics(self) -> None:
        """Empty the importance cache, the dense reference log-probs (shared with derived contexts) and the
        kept best trial's model; the data stays. For a caller that runs no more trials or prunes."""
        self.cache.clear()
        self._ref.clear()
        self._kept = None

    def _data(self) -> tuple[list[Any], torch.Tensor]:
        """Calibration pools and objective windows; the report's windows are kept aside (textsets.py)."""

        tok, s, kw = self.loaded.tokenizer, self.spec, {"loaded": self.loaded, "progress": self.progress}
        need = (s.val_windows + s.report_windows) * s.val_seq_len
        self.split = textsets.plan_split(s.calib, s.val, s.holdout, tok, need, **kw)
        pools = [CalibrationPool.from_sources([src], tok, self.bounds.max_seq_len, rng, **kw) for src, rng in self.split.calib]
        val, self.report_windows, self.rest = textsets.heldout_parts(self.split, tok, s.val_seq_len, s.val_windows,
                                                                     s.report_windows, **kw)
        return pools, val

    @property
    def rescore_windows(self) -> torch.Tensor:
        """Held-out windows after the report's that re-score the top trials (none when rescore_top is 0)."""
        return self.rest[: self.spec.rescore_windows if self.spec.rescore_top > 0 else 0]

    def data_sets(self, rescoring: bool = True) -> dict[str, textsets.TextSet]:
        """The three disjoint sets (source, part, windows, tokens) for report.json; `rescoring`: the search
        re-scores its top trials (the re-scoring windows are then part of the objective set)."""

        return textsets.describe(self.split, sum(len(p) for p in self.pools), self.bounds.max_seq_len, self.val,
                                 self.report_windows, len(self.rescore_windows) if rescoring else 0)

    def calibration(self, cfg: Any, weights: list[float]) -> Any:
        """The calibration input of prune(): the pool itself, or a weighted mix of windows."""
        if len(self.pools) == 1:
            return self.pools[0]
        parts = []
        for i, (pool, w) in enumerate(zip(self.pools, weights)):
            n = round(w * cfg.n_samples)
            if n > 0:
                p = pool.with_seq_len(cfg.seq_len)
                parts.append(p.windows[p.sample(n, cfg.sampling, cfg.seed + i, self.model)])
        return torch.cat(parts) if parts else self.pools[0]

    def evaluate(self, index: int, values: dict[str, Any], fidelity: int | None = None,
                 race: Race | None = None) -> TrialRecord:
        """Run one trial: solve the recipe's smallest ratio meeting the budget at the trial's quant recipe
        (StructureProbe + predictor), prune a copy at it, check the budget on its actual Structure, score on
        held-out windows. cost = objective (loss or KL, nats/token; as the plan's recovery estimate has it
        when the spec has a recovery closure) + the quant recipe's penalty log(PPL_recipe / PPL_F16) when the
        quant is searched: the additive (log-space) form of the estimate build's `pruned_estimate` makes
        multiplicatively on PPL (torch PPL x the recipe's quantization factor). With a `race` (race.py) the
        scoring stops once the trial is clearly worse than the incumbent, and a trial below race.rescore_below
        is scored on the re-scoring windows at once."""

        t0, misses = time.perf_counter(), self.cache.misses
        quant = self.spec.quant_of(values)
        recipe, weights = to_prune_config(values, ffn_align(quant), self.spec.seed)
        calib = self.calibration(recipe, weights)
        sol = self.solve(recipe, calib, quant)
        cfg = dataclasses.replace(recipe, ratio=sol.ratio)
        res = prune(self.model, calib, cfg, cache=self.cache)
        report = self._latency(res.structure, quant)
        ok, reason = budget_ok(res.structure, self.profile, quant, report, self.spec.budget_ms)
        n_val = min(fidelity or len(self.val), len(self.val))
        loss = ppl = kl = rescored = None
        costs: tuple[float, ...] = ()
        cost, n_rescore = PENALTY, 0
        if ok:
            loss, kl, costs = self._score(res.model, self.val[:n_val], "objective", quant, race)
            ppl, cost = math.exp(loss), sum(costs) / len(costs)
            if len(costs) < n_val:  # raced out: clearly worse than the incumbent
                cost, n_val = race.estimate(costs), len(costs)
            elif race is not None and cost < race.rescore_below and len(self.rescore_windows):
                rescored = self._score(res.model, self.rescore_windows, "rescore", quant)[2]
                n_rescore = len(rescored)
            if race is not None and len(costs) == n_val and race.becomes_choice(costs):
                self._kept = (_trial_key(index, values), res)  # the search's choice: reprune() hands it out
        return TrialRecord(index, values, "ok" if ok else "violates", float(cost), loss, ppl, kl,
                           res.decoder_ratio, res.total_ratio, res.params_after, report.decode_ms_per_token,
                           report.prefill_tps, reason, res.structure, cfg.to_dict(), n_val,
                           time.perf_counter() - t0, self.cache.misses == misses, sol.ratio, sol.steps, quant,
                           costs, sum(rescored) / n_rescore if n_rescore else None, n_rescore)

    def solve(self, recipe: Any, calib: Any, quant: QuantRecipe | None = None) -> RatioSolution:
        """Smallest ratio of `recipe` whose structure meets the budget at `quant` (default: the spec's) on
        the predictor calibrated for that recipe."""
        quant = quant or self.spec.quant
        probe = StructureProbe(self.model, calib, recipe, self.cache)
        fits = predicted_fit(self.predictor(quant), self.profile, self.spec.budget_ms)
        return solve_ratio(probe.at, fits, min(self.bounds.r_max, MAX_RATIO))

    def predictor(self, quant: QuantRecipe) -> Predictor:
        """The device's predictor at `quant`, calibrated by the spec's measured / predicted factors for it."""
        return self.device.predictor(quant, self.spec.calibration_of(quant))

    def _latency(self, structure: Any, quant: QuantRecipe) -> Any:
        """Measured with the device's backend when measure_trials (shape-only GGUF, cached per structure),
        else predicted by the roofline times the recipe's calibration (measured / predicted)."""
        return self.predictor(quant).latency(structure, measure=self.spec.measure_trials)

    def reprune(self, record: TrialRecord, progress: Any = None) -> tuple[PruneConfig, Any]:
        """(config, prune result) of a finished trial's recipe pruned again at the ratio its trial solved,
        with the same calibration: the same structure and weights as the trial's."""
        solved = PruneConfig.from_dict(record.prune_config)
        cfg, weights = to_prune_config(record.values, solved.align, self.spec.seed, solved.ratio)
        if self._kept is not None and self._kept[0] == _trial_key(record.index, record.values) \
                and self._kept[1].structure == record.structure:
            return cfg, self._kept[1]  # the best trial's pruned model, kept since its trial
        return cfg, prune(self.model, self.calibration(cfg, weights), cfg, cache=self.cache, progress=progress)

    def rescore(self, record: TrialRecord) -> tuple[float, int, bool, float]:
        """(cost, windows, same structure, seconds) of a finished trial on the re-scoring windows: its recipe
        pruned again at its solved ratio with the same calibration, scored like evaluate(). `same structure`:
        the prune reproduced the trial's structure. For trials recorded without a trial-time re-score (runs
        before race.py); nothing is pruned when there are no re-scoring windows (cost nan, windows 0)."""
        if len(self.rescore_windows) == 0:
            return math.nan, 0, False, 0.0
        t0 = time.perf_counter()
        _, res = self.reprune(record)
        costs = self._score(res.model, self.rescore_windows, "rescore", record.quant or self.spec.quant)[2]
        return sum(costs) / len(costs), len(costs), res.structure == record.structure, time.perf_counter() - t0

    @torch.no_grad()
    def _score(self, model: Any, windows: torch.Tensor, name: str, quant: QuantRecipe,
               race: Race | None = None) -> tuple[float, float | None, tuple[float, ...]]:
        """(mean next-token NLL in nats, mean KL(dense ‖ pruned) per token for the KL objective, per-window
        costs) over `windows`, or over the first ones when `race` says the trial is clearly worse (`name` keys
        the dense reference: "objective" or "rescore"). A window's cost: its objective under the spec's
        recovery closure, plus the quant recipe's penalty."""
        nlls, kls, costs = [], [], []
        for i in range(len(windows)):
            w = windows[i: i + 1]
            logp = torch.log_softmax(model(input_ids=w, use_cache=False).logits.float()[0, :-1], dim=-1)
            nlls.append(-logp.gather(1, w[0, 1:, None]).mean().item())
            if self.spec.objective == "kl":
                ref = self._reference(name, i, w)
                kls.append((ref.exp() * (ref - logp)).sum(-1).mean().item())
            costs.append(self._cost(name, i, w, kls[-1] if kls else nlls[-1]) + self.spec.quant_penalty(quant))
            if race is not None and race.clearly_worse(costs):
                break
        return sum(nlls) / len(nlls), (sum(kls) / len(kls) if kls else None), tuple(costs)

    def _cost(self, name: str, i: int, window: torch.Tensor, objective: float) -> float:
        """A window's objective as the plan's recovery estimate has it (recover/estimate.py): the share
        spec.recover_closure of its gap to the dense model closed (KL's gap is itself; loss's is to the dense
        model's loss on the window)."""
        c = self.spec.recover_closure
        if c <= 0:
            return objective
        if self.spec.objective == "kl":
            return (1 - c) * objective
        dense = self._dense_loss(name, i, window)
        return dense + (1 - c) * (objective - dense)

    def _dense_loss(self, name: str, i: int, window: torch.Tensor) -> float:
        """The dense model's mean NLL on window i of the `name` windows (computed once)."""
        key = (f"{name}-loss", i)
        if key not in self._ref:
            logp = torch.log_softmax(self.model(input_ids=window, use_cache=False).logits.float()[0, :-1], dim=-1)
            self._ref[key] = -logp.gather(1, window[0, 1:, None]).mean()
        return float(self._ref[key])

    def _reference(self, name: str, i: int, window: torch.Tensor) -> torch.Tensor:
        """Dense log-probs of window i of the `name` windows (kept in float16 to bound memory)."""
        if (name, i) not in self._ref:
            logits = self.model(input_ids=window, use_cache=False).logits.float()[0, :-1]
            self._ref[(name, i)] = torch.log_softmax(logits, dim=-1).half()
        return self._ref[(name, i)].float()


def _trial_key(index: int, values: dict[str, Any]) -> str:
    import json

    return json.dumps([index, values], sort_keys=True, default=str)
