"""The three disjoint text sets of a search or build: calibration, objective, report.

Calibration windows score importance and fit the reconstruction; the search's objective (validation loss
or KL) selects a recipe on its own windows; the report's quality figures use windows that neither ever
saw (otherwise the headline perplexity rewards the recipe the search overfitted to). Where they come from:

- with `val` (a file): calibration = every calibration source in full; objective = the first
  `n_objective` windows of `val`; report = the next `n_report` windows.
- without: the first calibration source is split by records. Its tail (at least `holdout` of the
  records, more if the windows need more tokens, at most half) is held out and cut into windows:
  objective first, report next; calibration = the records before the tail (+ all other sources).

Windows left after the report's (the tail holds more than it needs) re-score the search's top trials
before one is chosen (search/rescore.py); they belong to the objective set, never to the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from adaprune_edge.errors import ConfigError, DataError
from adaprune_edge.data.calibration import BUILTIN_DEFAULT, read_records
from adaprune_edge.data.calibration import CalibrationPool

MAX_TAIL = 0.5  # calibration keeps at least half of the first source's records


@dataclass(frozen=True)
class TextSet:
    """One named set: which source, which part of it, how many windows of how many tokens."""

    name: str
    source: str
    part: str
    windows: int
    seq_len: int

    @property
    def tokens(self) -> int:
        return self.windows * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextSet":
        return cls(**{k: d[k] for k in ("name", "source", "part", "windows", "seq_len")})


@dataclass(frozen=True)
class Split:
    """Where calibration stops and the held-out windows start (same for the search and the report)."""

    calib: tuple[tuple[str, tuple[float, float]], ...]  # (source, record range) per calibration source
    heldout: str
    heldout_range: tuple[float, float]


def same_source(a: str, b: str) -> bool:
    """The same source name, or two paths to the same file."""
    return a == b or (Path(a).expanduser().exists() and Path(a).expanduser().resolve() == Path(b).expanduser().resolve())


def _tail_share(records: Sequence[str], tokenizer: Any, need_tokens: int, holdout: float) -> float:
    """Smallest share ≥ holdout of the last records that holds `need_tokens` tokens (capped at MAX_TAIL)."""
    n, have = len(records), 0
    for k in range(1, n + 1):
        if k / n > MAX_TAIL:
            break
        have += len(tokenizer(records[n - k].strip() + "\n\n", add_special_tokens=False)["input_ids"])
        if k / n >= holdout and have >= need_tokens * 1.05:  # margin: windows do not end on record edges
            return k / n
    return MAX_TAIL


def plan_split(sources: Sequence[str], val: str | None, holdout: float, tokenizer: Any, need_tokens: int,
               loaded: Any = None, progress: Any = None) -> Split:
    """Decide the record ranges (reads the first source once when it has to be split)."""

    sources = list(sources) or [BUILTIN_DEFAULT]
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout share must be in (0, 1), got {holdout}")
    if val is not None:
        if any(same_source(val, s) for s in sources):
            raise ConfigError(f"--val {val} is also a calibration source: the sets would overlap; "
                              "pass a different --val or drop it from --calib")
        return Split(tuple((s, (0.0, 1.0)) for s in sources), val, (0.0, 1.0))
    records = read_records(sources[0], loaded, progress)
    if len(records) < 2:
        raise DataError(f"cannot hold out part of {sources[0]}: it is one record; pass --val FILE for the held-out text")
    share = _tail_share(records, tokenizer, need_tokens, holdout)
    calib = ((sources[0], (0.0, 1.0 - share)),) + tuple((s, (0.0, 1.0)) for s in sources[1:])
    return Split(calib, sources[0], (1.0 - share, 1.0))


def heldout_windows(split: Split, tokenizer: Any, seq_len: int, n_objective: int, n_report: int,
                    loaded: Any = None, progress: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective windows, report windows): consecutive, non-overlapping windows of the held-out part.
    The report gets what is left after the objective, up to n_report, at least one window."""

    objective, report, _ = heldout_parts(split, tokenizer, seq_len, n_objective, n_report, loaded, progress)
    return objective, report


def heldout_parts(split: Split, tokenizer: Any, seq_len: int, n_objective: int, n_report: int,
                  loaded: Any = None, progress: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """heldout_windows() plus the held-out windows after the report's (`rest`, possibly none): the search
    re-scores its top trials on them (search/rescore.py), so the report's windows stay unseen."""

    pool = CalibrationPool.from_sources([split.heldout], tokenizer, seq_len, split.heldout_range, loaded=loaded,
                                        progress=progress, min_windows=n_objective + 1)
    w = pool.windows
    return w[:n_objective], w[n_objective: n_objective + n_report], w[n_objective + n_report:]


def _pct(r: tuple[float, float]) -> str:
    return f"records {r[0]:.0%}-{r[1]:.0%}"


def describe(split: Split, calib_windows: int, calib_seq_len: int, objective: torch.Tensor,
             report: torch.Tensor, rescore: int = 0) -> dict[str, TextSet]:
    """The three sets by name (report.json's `data_sets`). `rescore`: windows after the report's
    that re-scored the search's top trials (part of the objective set: they chose the recipe)."""
    n_obj, n_rep = int(objective.shape[0]), int(report.shape[0])
    obj_part = f"{_pct(split.heldout_range)}, windows 0-{n_obj - 1}"
    if rescore:
        first = n_obj + n_rep
        obj_part += f" (trials), {first}-{first + rescore - 1} (re-scoring the top trials)"
    sets = [TextSet("calibration", " + ".join(s for s, _ in split.calib), "; ".join(_pct(r) for _, r in split.calib),
                    calib_windows, calib_seq_len),
            TextSet("objective", split.heldout, obj_part, n_obj + rescore, int(objective.shape[1])),
            TextSet("report", split.heldout, f"{_pct(split.heldout_range)}, windows {n_obj}-{n_obj + n_rep - 1}",
                    n_rep, int(report.shape[1]))]
    return {s.name: s for s in sets}
