"""Search trials on disk: the run's spec (search.json) and one JSON line per finished trial
(trials.jsonl, appended and fsynced, so a killed run loses at most the trial in flight)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaprune_edge.archs.structure import Structure
from adaprune_edge.errors import ConfigError, OutputExistsError
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.runs import append_json_line, atomic_path, write_json

SPEC_FILE, TRIALS_FILE, CSV_FILE = "search.json", "trials.jsonl", "trials.csv"
# spec fields that may change on --resume (a longer or shorter run of the same search; the re-scoring of
# its top trials and the stopping rule, which no finished trial depends on)
RESUMABLE_CHANGES = {"n_trials", "walltime_s", "workers", "rescore_top", "rescore_windows", "patience"}


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial. status: 'ok' | 'violates' (structure misses the budget; cost is a penalty)
    | 'error'. cost: what SMAC was told (validation loss in nats/token, or KL; penalty otherwise).
    decode_ms: predicted decode ms/token of the structure on the device. solved_ratio: the config ratio the
    solver chose for this recipe (decoder_ratio is what the pruned structure achieved). quant: the quant
    recipe the trial's ratio was solved and its budget checked at (its cost includes that recipe's penalty
    when the quant is searched); records written before quants were searched read as the spec's quant."""

    index: int
    values: dict[str, Any]
    status: str
    cost: float
    loss: float | None
    ppl: float | None
    kl: float | None
    decoder_ratio: float
    total_ratio: float
    params: int
    decode_ms: float
    prefill_tps: float
    budget_reason: str
    structure: Structure | None  # None for an 'error' trial (nothing was pruned)
    prune_config: dict[str, Any]
    fidelity: int
    seconds: float
    cache_hit: bool
    solved_ratio: float | None = None  # the trial's own smallest ratio meeting the budget (search/ratio.py)
    ratio_steps: int = 0               # structures probed by the ratio solver
    quant: QuantRecipe | None = None   # the trial's quant recipe (SearchSpec.quant_of)
    window_costs: tuple[float, ...] = ()  # objective cost per window scored (fewer when raced out: race.py)
    rescore_cost: float | None = None     # cost on the re-scoring windows, scored at trial time (race.py)
    rescore_windows: int = 0
    origin: str = ""                      # 'warm' (a fixed warm-start recipe) or 'smac' ('' before recorded)

    @property
    def feasible(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["structure"] = self.structure.to_dict() if self.structure is not None else None
        d["quant"] = self.quant.name if self.quant is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], quant: QuantRecipe | None = None) -> "TrialRecord":
        """The record of `d`; `quant` fills the quant of records written before it was recorded."""
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        kw["structure"] = Structure.from_dict(kw["structure"]) if kw.get("structure") else None
        kw["quant"] = QuantRecipe.parse(kw["quant"]) if kw.get("quant") else quant
        kw["window_costs"] = tuple(kw.get("window_costs", ()))
        return cls(**kw)

    def summary(self) -> str:
        v = self.values
        depth = f" depth {v['depth_share']:.2f}" if v.get("depth") == "on" else ""
        return (f"{v['metric']}/{v['aggregation']} {v['allocation']} {v['head_unit']} "
                f"{v['sampling']} {v['n_samples']}x{v['seq_len']}{depth}"
                f"{' +bias' if v.get('bias_compensation') and not v.get('reconstruction') else ''}"
                f"{' +lsq(%.2g)' % v['recon_damp'] if v.get('reconstruction') else ''}"
                f"{_profile(v) if v['allocation'] == 'profile' else ''}"
                f"{' @' + str(v['quant']) if 'quant' in v else ''}")


def _profile(v: dict[str, Any]) -> str:
    knots = "/".join(f"{v[k]:.2f}" for k in sorted(v) if k.startswith("knot_"))
    return f" knots {knots} heads×{v.get('head_weight', 1.0):.2f}"


class TrialStore:
    """The run directory of one search."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)

    @property
    def spec_path(self) -> Path:
        return self.dir / SPEC_FILE

    def open(self, spec: dict[str, Any], resume: bool, force: bool) -> list[TrialRecord]:
        """Start or continue a run; returns the finished trials (empty for a new run)."""
        if self.spec_path.exists() and resume:
            self._check_same(spec)
            write_json(self.spec_path, spec)
            return self.records(QuantRecipe.parse(spec["quant"]) if spec.get("quant") else None)
        if self.dir.exists() and any(self.dir.iterdir()) and not force:
            if resume:
                raise ConfigError(f"{self.dir} is not an adaprune-edge search run (no {SPEC_FILE}); nothing was changed")
            raise OutputExistsError(f"run directory {self.dir} exists; pass --resume to continue it or --force to start over")
        if force and self.dir.exists():
            for name in (SPEC_FILE, TRIALS_FILE, CSV_FILE, "smac"):
                p = self.dir / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.spec_path, spec)
        return []

    def _check_same(self, spec: dict[str, Any]) -> None:
        try:
            old = json.loads(self.spec_path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.spec_path} is corrupt ({e}); nothing was changed") from None
        if not isinstance(old, dict) or old.get("kind") != spec.get("kind"):
            raise ConfigError(f"{self.spec_path} is not an adaprune-edge search spec; nothing was changed")
        diff = sorted(k for k in set(old) | set(spec) if k not in RESUMABLE_CHANGES and old.get(k) != spec.get(k))
        if diff:
            raise ConfigError(f"--resume: {self.dir} was started with different settings ({', '.join(diff)}); "
                              "use the same options, or another --out")

    def records(self, quant: QuantRecipe | None = None) -> list[TrialRecord]:
        """The finished trials; `quant` (the spec's) for records that do not name theirs."""
        path = self.dir / TRIALS_FILE
        if not path.exists():
            return []
        out, lines = [], path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(TrialRecord.from_dict(json.loads(line), quant))
            except (ValueError, KeyError, TypeError):
                if n == len(lines):
                    break  # a torn last line from a kill: that trial is simply redone
                raise ConfigError(f"{path}: line {n} is corrupt; nothing was changed") from None
        return out

    def append(self, record: TrialRecord) -> None:
        append_json_line(self.dir / TRIALS_FILE, record.to_dict())

    def write_csv(self, records: list[TrialRecord]) -> Path:
        path = self.dir / CSV_FILE
        cols = ["index", "status", "cost", "loss", "ppl", "kl", "quant", "solved_ratio", "decoder_ratio", "total_ratio", "params",
                "decode_ms", "prefill_tps", "fidelity", "rescore_cost", "seconds", "cache_hit", "origin", "recipe"]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(cols + sorted({k for r in records for k in r.values}))
            keys = sorted({k for r in records for k in r.values})
            for r in records:
                d = r.to_dict()
                w.writerow([d[c] if c != "recipe" else r.summary() for c in cols] + [r.values.get(k, "") for k in keys])
        return path
