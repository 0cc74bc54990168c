"""`build`: the whole pipeline as resumable stages in one run directory.

candidates → plan → search → prune → recover → export → validate → report. Each stage writes its artefacts atomically and
records itself in state.json; --resume skips finished stages (a killed search continues trial by trial).
Library code: progress goes through the `Hooks` callbacks, nothing is printed here."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from adaprune_edge.evaluate.validation import peak_rss_bytes
from adaprune_edge.pipeline import export_stage, plan_stages, prune_stages, recover_stage, report, validate_stage
from adaprune_edge.pipeline.context import BuildContext
from adaprune_edge.pipeline.results import Recovered
from adaprune_edge.pipeline.state import STAGES, BuildState
from adaprune_edge.device import Device
from adaprune_edge.errors import ConfigError, OutputExistsError
from adaprune_edge.overrides import BudgetOverrides
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.runs import write_json

LATER_THAN_RECOVER = STAGES[STAGES.index("recover") + 1:]
STATE_FILE = "state.json"


@dataclass(frozen=True)
class BuildSpec:
    """Inputs of a build. budget_ms overrides the profile's decode budget; target_tps is its inverse."""

    device: str
    model: str = "default"
    budget_ms: float | None = None
    quant: QuantRecipe | None = None
    trials: int = 20
    rescore_top: int = 3  # trials re-scored on more held-out windows before the best is chosen
    patience: int = 3  # the search stops after this many trials without a real improvement (search/race.py)
    workers: int = 1
    scheduler: str | None = None
    seed: int = 0
    calib: tuple[str, ...] = ()
    val: str | None = None
    val_windows: int = 4
    val_seq_len: int = 512
    max_ratio: float = 0.6
    max_samples: int = 64
    max_seq_len: int = 256
    objective: str = "loss"
    data_dir: str | None = None
    tasks: tuple[str, ...] = ("piqa", "arc_easy")
    eval_limit: int = 100
    report_windows: int = 8
    imatrix: bool = True  # importance matrix for the quantizer, from the calibration windows
    recover_minutes: float = 10.0  # distillation allowance when pruning ships (0 and no tokens = no recovery)
    recover_tokens: int = 0  # token bound of the distillation (0 = minutes only)
    recover_text: tuple[str, ...] = ()  # recovery text sources; () = builtin:self sampled with another seed
    recover_self_tokens: int = 40960  # tokens of builtin:self recovery text to sample
    recover_train: str = "decoder"
    ttft_s: float | None = None  # first-token budget, seconds, for a prompt of prompt_tokens (profile's if None)
    prompt_tokens: int | None = None
    context: int | None = None  # context length RAM is checked at (profile's if None)
    ram_share: float | None = None  # share of the device's RAM the model may use (profile's if None)
    ram_mb: float | None = None  # memory limit of the llama.cpp process, MiB
    kv_cache: str | None = None  # K/V cache type the memory check starts from (profile's if None)
    kind: str = "adaprune-edge/build-v2"  # v2: quant recipes are planned (candidates stage)

    def budget(self) -> BudgetOverrides:
        """The budget figures this build states beside (or instead of) its profile's."""
        return BudgetOverrides(decode_ms=self.budget_ms, ttft_s=self.ttft_s, prompt_tokens=self.prompt_tokens,
                               context_length=self.context, ram_share=self.ram_share, ram_mb=self.ram_mb,
                               kv_cache=self.kv_cache)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["calib"], d["tasks"], d["recover_text"] = list(self.calib), list(self.tasks), list(self.recover_text)
        d["quant"] = self.quant.name if self.quant else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BuildSpec":
        d = dict(d)
        d["calib"], d["tasks"] = tuple(d.get("calib", ())), tuple(d.get("tasks", ()))
        d["recover_text"] = tuple(d.get("recover_text", ()))
        d["quant"] = QuantRecipe.parse(d["quant"]) if d.get("quant") else None
        return cls(**d)


@dataclass
class Hooks:
    """Progress callbacks for the CLI: stage(name, status) and progress(stage, done, total, note)."""

    stage: Callable[[str, str], None] = lambda name, status: None
    progress: Callable[[str, int, int, str], None] = lambda stage, done, total, note: None
    trial: Callable[[Any, list], None] = lambda rec, records: None


class RunDir:
    """Artefacts and stage bookkeeping of one build."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def read(self) -> tuple[dict[str, Any], BuildState] | None:
        """(stored spec, state) of state.json; None without one. ConfigError in one line when it cannot be read."""
        p = self.file(STATE_FILE)
        if not p.exists():
            return None
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:  # also UnicodeDecodeError
            raise ConfigError(f"{p} is corrupt; rerun with --force") from None
        _check_state_shape(raw, p)
        from adaprune_edge.bitalloc import recipe_file

        recipe_file.load_all(self.path)  # the run's allocations, so their recipe names parse
        try:
            return raw["spec"], BuildState.from_dict(raw["done"])
        except ValueError as e:
            raise ConfigError(f"{p}: {e}; rerun with --force") from None

    def open(self, spec: BuildSpec, resume: bool, force: bool) -> BuildState:
        """Create, continue (--resume) or replace (--force) the run directory; returns the state."""
        found = self.read() if resume else None  # --force must also replace a corrupt state.json
        if found is not None:
            try:  # a run from before a new option has its default
                old = BuildSpec.from_dict(found[0]).to_dict()
            except TypeError:  # options this version does not know
                raise ConfigError(f"--resume: {self.path} was built by another version of adaprune-edge; "
                                  "use another --out or --force") from None
            if old != spec.to_dict():
                changed = sorted(k for k in spec.to_dict() if old.get(k) != spec.to_dict()[k])
                raise ConfigError(f"--resume: {self.path} was built with different options ({', '.join(changed)}); "
                                  "use the same options or another --out")
            self._remove_stale_temps()
            return _predates_recover(found[1])
        if self.path.exists() and any(self.path.iterdir()):
            if resume:
                raise ConfigError(f"{self.path} is not an adaprune-edge build directory; nothing was changed")
            if not force:
                raise OutputExistsError(f"output directory {self.path} exists; pass --resume to continue it or --force to replace it")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        state = BuildState()
        self.save(spec, state)
        return state

    def _remove_stale_temps(self) -> None:
        """A killed build leaves its in-flight temp files (runs.atomic_path names them .<name>.*.tmp);
        finished outputs were renamed into place, so only these are partial."""
        for p in list(self.path.glob(".*.tmp")) + list(self.path.glob("*/.*.tmp")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    def save(self, spec: BuildSpec, state: BuildState) -> None:
        write_json(self.file(STATE_FILE), {"spec": spec.to_dict(), "done": state.to_dict()})


def _check_state_shape(state: Any, path: Path) -> None:
    """Valid JSON of the wrong shape (another tool's file, a hand edit) would fail mid-build with a KeyError."""
    ok = (isinstance(state, dict) and isinstance(state.get("spec"), dict) and isinstance(state.get("done"), dict)
          and state["spec"].get("kind") == BuildSpec.kind and set(state["done"]) <= set(STAGES)
          and all(isinstance(v, dict) for v in state["done"].values()))
    if not ok:
        raise ConfigError(f"{path} is not the state of an adaprune-edge build; "
                          "pass another --out, or --force to replace the directory")


def _predates_recover(state: BuildState) -> BuildState:
    """A run exported before the recover stage existed keeps what it shipped: its recover stage is recorded
    as not run (with the reason), so --resume finishes the remaining stages instead of recovering after export."""
    done = state.finished()
    if "recover" not in done and any(k in done for k in LATER_THAN_RECOVER):
        return state.with_result("recover", Recovered(skipped="this run was exported before the recover stage existed"))
    return state


def planned_outputs(spec: BuildSpec, quant: str) -> list[str]:
    return [f"model-{quant}.gguf", "model-F16.gguf", "Modelfile", "report.json", "report.md", "tradeoff.png",
            "dense-F16.gguf + dense-<recipe>.gguf (scored quant-only candidates)", "imatrix.gguf",
            "trials.csv + search/ (when pruning is searched)", "pruned/ (safetensors + structure.json)",
            "recovered/ (the pruned model after distillation, when pruning ships)", STATE_FILE]


def run_build(spec: BuildSpec, out: Path, *, resume: bool = False, force: bool = False,
              hooks: Hooks | None = None, device: Device | None = None) -> dict[str, Any]:
    """Run every unfinished stage; returns the final report dict. device: the resolved spec.device (the
    CLI resolves it once; resolved here when not given)."""
    hooks = hooks or Hooks()
    run = RunDir(out)
    ctx = BuildContext(spec, run, hooks, device, state=run.open(spec, resume, force))
    for name in STAGES:
        if name in ctx.state.finished():
            hooks.stage(name, "done earlier")
            if name == "candidates":
                ctx.use_kv_cache(ctx.state.candidates.kv_cache)
            continue
        hooks.stage(name, "running")
        t0 = time.perf_counter()
        result = STAGE_FUNCTIONS[name](ctx).timed(time.perf_counter() - t0, peak_rss_bytes())
        ctx.state = ctx.state.with_result(name, result)
        run.save(spec, ctx.state)
        ctx.release(name)
        hooks.stage(name, f"finished in {result.seconds:.0f} s")
    return ctx.state.report.report


STAGE_FUNCTIONS: dict[str, Callable[[BuildContext], Any]] = {
    "candidates": plan_stages.stage_candidates, "plan": plan_stages.stage_plan,
    "search": prune_stages.stage_search, "prune": prune_stages.stage_prune,
    "recover": recover_stage.stage_recover, "export": export_stage.stage_export,
    "validate": validate_stage.stage_validate, "report": report.stage_report}
