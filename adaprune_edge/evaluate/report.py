"""The evaluation report: task accuracies, perplexity and divergence of one model, and retention vs a
first (dense) report. Written by `eval`, read by `compare`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaprune_edge.evaluate.divergence import WindowReport
from adaprune_edge.errors import DataError
from adaprune_edge.evaluate.harness import TaskResult

FORMAT = "adaprune-edge/eval/1"


@dataclass(frozen=True)
class EvalReport:
    """Everything `eval` measured for one model (torch or GGUF)."""

    model: str
    backend: str                        # "torch" | "gguf"
    tasks: tuple[TaskResult, ...] = ()
    windows: WindowReport | None = None
    ppl_data: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)   # limit, seed, seq_len, batch size ...
    seconds: float = 0.0

    def task(self, name: str) -> TaskResult | None:
        return next((t for t in self.tasks if t.task == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.model, "backend": self.backend,
                "tasks": [t.to_dict() for t in self.tasks],
                "windows": self.windows.to_dict() if self.windows else None, "ppl_data": self.ppl_data,
                "settings": dict(self.settings), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalReport":
        return cls(d["model"], d["backend"], tuple(TaskResult.from_dict(t) for t in d.get("tasks", [])),
                   WindowReport.from_dict(d["windows"]) if d.get("windows") else None, d.get("ppl_data"),
                   dict(d.get("settings") or {}), float(d.get("seconds") or 0.0))


def read_report(path: str | Path) -> EvalReport:
    """Load an `eval --out` JSON; DataError naming the file and what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"report {path} not found")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"report {path} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"report {path} is not an adaprune-edge eval report (no \"format\": \"{FORMAT}\")")
    try:
        return EvalReport.from_dict(data)
    except (KeyError, TypeError) as e:
        raise DataError(f"report {path} is missing field {e}") from None


def retention(value: float | None, base: float | None, lower_is_better: bool = False) -> float | None:
    """Value as % of the base: accuracy value/base; perplexity base/value (so 100% = as good as base)."""
    if value is None or base is None or value == 0 or base == 0:
        return None
    return 100.0 * (base / value if lower_is_better else value / base)
