"""Where search trials run: in this process (LocalEvaluator) or on a dask cluster (DaskEvaluator, one
SearchContext per worker process). run_search submits trials and collects finished TrialRecords."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from adaprune_edge.search.spec import PENALTY, SearchSpec
from adaprune_edge.search.objective import SearchContext
from adaprune_edge.search.race import Race
from adaprune_edge.search.trials import TrialRecord
from adaprune_edge.errors import AdapruneError


class Evaluator:
    """Runs trials: submit() returns a handle; next_done() blocks until one finishes."""

    slots = 1

    def submit(self, index: int, values: dict[str, Any], fidelity: int | None, race: Race | None = None) -> Any:
        raise NotImplementedError

    def next_done(self, handles: list[Any]) -> tuple[Any, TrialRecord]:
        raise NotImplementedError

    def cancel(self, handles: list[Any]) -> None:
        """Drop unfinished trials (they are redone on --resume)."""

    def rescore(self, record: TrialRecord) -> tuple[float, int, bool, float]:
        """SearchContext.rescore of a finished trial (rescore.py)."""
        raise NotImplementedError


class LocalEvaluator(Evaluator):
    """In this process, one trial at a time (the context is built on first use)."""

    def __init__(self, spec: SearchSpec, context: SearchContext | None = None) -> None:
        self.spec, self._ctx, self._queue = spec, context, {}

    @property
    def context(self) -> SearchContext:
        if self._ctx is None:
            self._ctx = SearchContext(self.spec)
        return self._ctx

    def submit(self, index: int, values: dict[str, Any], fidelity: int | None, race: Race | None = None) -> Any:
        self._queue[index] = (values, fidelity, race)
        return index

    def next_done(self, handles: list[Any]) -> tuple[Any, TrialRecord]:
        h = min(handles)
        values, fidelity, race = self._queue.pop(h)
        return h, safe_evaluate(self.context, h, values, fidelity, race)

    def rescore(self, record: TrialRecord) -> tuple[float, int, bool, float]:
        return self.context.rescore(record)


def safe_evaluate(ctx: SearchContext, index: int, values: dict[str, Any], fidelity: int | None,
                  race: Race | None = None) -> TrialRecord:
    """evaluate(), but a trial whose recipe cannot be applied (e.g. nothing left to prune under its
    protections) is recorded as status 'error' with the penalty cost instead of ending the search."""

    t0 = time.perf_counter()
    try:
        return ctx.evaluate(index, values, fidelity, race)
    except (AdapruneError, ValueError) as e:
        return TrialRecord(index, values, "error", PENALTY, None, None, None, 0.0, 0.0, 0, math.inf, 0.0,
                           f"{type(e).__name__}: {e}", None, {}, fidelity or 0, time.perf_counter() - t0, False,
                           quant=ctx.spec.quant_of(values))


_WORKER_CONTEXTS: dict[str, SearchContext] = {}


def _worker_context(spec_dict: dict[str, Any]) -> SearchContext:
    """This dask worker's context for the spec, built once per worker process."""
    import json

    torch.set_num_threads(1)
    key = json.dumps(spec_dict, sort_keys=True)
    if key not in _WORKER_CONTEXTS:
        _WORKER_CONTEXTS.clear()
        _WORKER_CONTEXTS[key] = SearchContext(SearchSpec.from_dict(spec_dict))
    return _WORKER_CONTEXTS[key]


def _remote_trial(spec_dict: dict[str, Any], index: int, values: dict[str, Any], fidelity: int | None,
                  race: dict[str, Any] | None = None) -> dict:
    """Runs on a dask worker: evaluate one trial."""
    race_ = Race.from_dict(race) if race is not None else None
    return safe_evaluate(_worker_context(spec_dict), index, values, fidelity, race_).to_dict()


def _remote_rescore(spec_dict: dict[str, Any], record: dict[str, Any]) -> tuple[float, int, bool, float]:
    """Runs on a dask worker: re-score one finished trial."""
    return _worker_context(spec_dict).rescore(TrialRecord.from_dict(record))


class DaskEvaluator(Evaluator):
    """Trials on a dask cluster: `slots` in flight at once (one per worker)."""

    def __init__(self, spec: SearchSpec, client: Any) -> None:
        self.spec, self.client = spec, client
        self.slots = max(1, len(client.scheduler_info().get("workers", {})) or spec.workers)

    def submit(self, index: int, values: dict[str, Any], fidelity: int | None, race: Race | None = None) -> Any:
        return self.client.submit(_remote_trial, self.spec.to_dict(), index, values, fidelity,
                                  race.to_dict() if race is not None else None, pure=False)

    def next_done(self, handles: list[Any]) -> tuple[Any, TrialRecord]:
        from distributed import wait

        done, _ = wait(handles, return_when="FIRST_COMPLETED")
        fut = min(done, key=lambda f: handles.index(f))
        return fut, TrialRecord.from_dict(fut.result())

    def cancel(self, handles: list[Any]) -> None:
        if handles:
            self.client.cancel(handles)

    def rescore(self, record: TrialRecord) -> tuple[float, int, bool, float]:
        return self.client.submit(_remote_rescore, self.spec.to_dict(), record.to_dict(), pure=False).result()
