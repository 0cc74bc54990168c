"""BuildState: the typed results of a build's finished stages, one optional field per stage, in stage order.
state.json stores `{"spec": BuildSpec.to_dict(), "done": BuildState.to_dict()}`; --resume reads it back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from adaprune_edge.pipeline.results import (Candidates, Exported, Plan, Pruned, Recovered, Reported, SearchDone,
                                            StageResult, Validated)


@dataclass(frozen=True)
class BuildState:
    """None for a stage that has not finished. Later stages read `ctx.state.plan.quant`, never string keys."""

    candidates: Candidates | None = None
    plan: Plan | None = None
    search: SearchDone | None = None
    prune: Pruned | None = None
    recover: Recovered | None = None
    export: Exported | None = None
    validate: Validated | None = None
    report: Reported | None = None

    def finished(self) -> dict[str, StageResult]:
        """Stage name → result of every finished stage, in stage order."""
        return {name: r for name in STAGES if (r := getattr(self, name)) is not None}

    def with_result(self, stage: str, result: StageResult) -> "BuildState":
        return dataclasses.replace(self, **{stage: result})

    def to_dict(self) -> dict[str, Any]:
        return {name: r.to_dict() for name, r in self.finished().items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BuildState":
        """Raises ValueError naming the stage whose stored result this version cannot read."""
        out = {}
        for name, stored in d.items():
            try:
                out[name] = RESULT_TYPES[name].from_dict(stored)
            except (TypeError, KeyError, ValueError, AttributeError) as e:
                raise ValueError(f"its {name} stage cannot be read by this version ({type(e).__name__}: {e})") from None
        return cls(**out)


STAGES = tuple(f.name for f in dataclasses.fields(BuildState))
RESULT_TYPES: dict[str, type] = {"candidates": Candidates, "plan": Plan, "search": SearchDone, "prune": Pruned,
                                 "recover": Recovered, "export": Exported, "validate": Validated, "report": Reported}
