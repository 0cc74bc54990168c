"""The recovery text set: what the student is distilled on, disjoint from calibration, objective and report.

Sources are the calibration sources' kinds (files, `builtin:self`, hub datasets when online). `builtin:self`
here is the dense model's own text sampled again with another seed than calibration's (seed +
SELF_SEED_OFFSET): new samples, none of calibration's records. A file that is also a calibration source or
the held-out (--val) file is refused: its records could be scored or reported on."""

from __future__ import annotations

from pathlib import Path

from typing import Any, Callable, Sequence

import torch

from adaprune_edge.data.calibration import CalibrationPool, read_records, record_slice
from adaprune_edge.data.selfgen import SelfGenConfig, self_text
from adaprune_edge.data.textsets import TextSet, same_source
from adaprune_edge.errors import DataError, ConfigError

SELF = "builtin:self"
SELF_SEED_OFFSET = 7919  # recovery's builtin:self samples use seed + this: disjoint from calibration's
DEFAULT_SELF_TOKENS = 40960


def check_disjoint(sources: Sequence[str], calib: Sequence[str], val: str | None) -> None:
    """DataError when a recovery file does not exist; ConfigError when it is also a calibration source or the
    held-out file."""
    for s in sources:
        if s == SELF:
            continue
        if not s.startswith("builtin:") and not Path(s).exists():
            raise DataError(f"recovery text {s} not found: pass an existing file or builtin:self")
        for other in list(calib) + ([val] if val else []):
            if same_source(s, other):
                raise ConfigError(f"recovery text {s} is also a calibration or held-out source: the sets would "
                                  "overlap; pass another --recover-text")


def recovery_windows(sources: Sequence[str], loaded: Any, seq_len: int, seed: int = 0,
                     self_tokens: int = DEFAULT_SELF_TOKENS, record_range: tuple[float, float] = (0.0, 1.0),
                     progress: Callable[[int, int, str], None] | None = None) -> tuple[torch.Tensor, TextSet]:
    """Training windows [n, seq_len] of the recovery sources and the named set describing them.
    record_range: the share of each file's records to use (e.g. (0, 0.5) keeps the rest for evaluation)."""
    a, b = record_range
    if not 0.0 <= a < b <= 1.0:
        raise ConfigError(f"--text-range must satisfy 0 <= START < STOP <= 1, got {a}:{b}")
    records: list[str] = []
    parts = []
    for s in sources or [SELF]:
        if s == SELF:
            text = self_text(loaded, SelfGenConfig(n_tokens=self_tokens, seed=seed + SELF_SEED_OFFSET), progress)
            records.extend(text.records)
            parts.append(f"{SELF} seed {seed + SELF_SEED_OFFSET} ({len(text.records)} samples)")
        else:
            recs = record_slice(read_records(s), record_range)
            records.extend(recs)
            parts.append(f"{s} records {a:.0%}-{b:.0%} ({len(recs)} records)")
    pool = CalibrationPool.from_records(records, loaded.tokenizer, seq_len, tuple(sources or [SELF]))
    return pool.windows, TextSet("recovery", " + ".join(sources or [SELF]), "; ".join(parts), len(pool), seq_len)
