"""state.json: the typed BuildState reads the file a finished build of the previous format wrote
(tests/data/state-quant-only.json: a real default-model build on raspberry-pi-5, quantization alone), writes
the same keys back, and rebuilds the same report from it; a state it cannot read is one line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from adaprune_edge.errors import ConfigError
from adaprune_edge.evaluate.runtime_ram import RuntimeRam
from adaprune_edge.evaluate.validation import ValidationReport
from adaprune_edge.pipeline.build import STATE_FILE, BuildSpec, RunDir
from adaprune_edge.pipeline.report import build_report
from adaprune_edge.pipeline.results import QuantOnly
from adaprune_edge.pipeline.state import STAGES, BuildState
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

FIXTURE = Path(__file__).parent / "data" / "state-quant-only.json"


def _run(tmp_path: Path) -> tuple[dict[str, Any], RunDir]:
    shutil.copyfile(FIXTURE, tmp_path / STATE_FILE)
    return json.loads(FIXTURE.read_text()), RunDir(tmp_path)


def _without_family(d: Any) -> Any:
    """Without what this version adds to a state of the previous format: structures' `family` (added on
    reading, default llama), a candidate's `kl` and the report's `allocation` (None: not measured / a
    uniform recipe shipped), a stage's `peak_rss_bytes` (0: not recorded), the report's `search_cost` ({}:
    no search; the search stage's `cost`, likewise) and `stage_peak_rss_bytes` (the stages' recorded peaks)."""
    if isinstance(d, dict):
        return {k: _without_family(v) for k, v in d.items()
                if k not in ("family", "stage_peak_rss_bytes") and not (k in ("kl", "allocation") and v is None)
                and not (k == "peak_rss_bytes" and v == 0) and not (k in ("search_cost", "cost") and v == {})}
    if isinstance(d, list):
        return [_without_family(x) for x in d]
    return d


def test_a_finished_build_of_the_previous_format_resumes_typed(tmp_path):
    raw, run = _run(tmp_path)
    state = run.open(BuildSpec.from_dict(raw["spec"]), resume=True, force=False)
    assert tuple(state.finished()) == STAGES
    val = state.validate
    assert isinstance(val.quant, ValidationReport) and isinstance(val.f16, ValidationReport)
    assert val.f16.passed and val.quant.file_type == "Q8_0" and val.quant.speed.threads == 2
    assert isinstance(val.runtime_ram, RuntimeRam) and val.runtime_ram.n_ctx == 2048
    assert isinstance(val.quant_only, QuantOnly) and val.quant_only.recipe == R("Q8_0:imatrix")
    assert state.plan.model_info.n_layer == 30 and state.export.quant_report.file_bytes == 144812800
    assert state.search.data_sets["report"].source == "builtin:self"
    # written back with the same keys and values (today's main reads it)
    assert _without_family(json.loads(json.dumps(state.to_dict()))) == raw["done"]


def test_the_report_rebuilt_from_a_resumed_state_is_the_one_written(tmp_path):
    raw, run = _run(tmp_path)
    state = dataclasses.replace(run.read()[1], report=None)  # as the report stage sees it
    rep = json.loads(json.dumps(build_report(state, BuildSpec.from_dict(raw["spec"]))))
    old = raw["done"]["report"]["report"]
    assert list(_without_family(rep)) == list(old)
    for key in ("build_peak_rss_bytes",):  # this process's peak, not the build's
        rep.pop(key), old.pop(key)
    assert _without_family(rep) == old


def test_a_stage_this_version_cannot_read_is_one_line(tmp_path):
    raw, run = _run(tmp_path)
    del raw["done"]["plan"]["mode"]
    (tmp_path / STATE_FILE).write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as e:
        run.open(BuildSpec.from_dict(raw["spec"]), resume=True, force=False)
    msg = str(e.value)
    assert "its plan stage cannot be read" in msg and msg.endswith("rerun with --force") and "\n" not in msg
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"corrupt; rerun with --force$"):
        run.open(BuildSpec.from_dict(raw["spec"]), resume=True, force=False)


def test_state_is_saved_after_each_stage_with_its_results(tmp_path):
    raw, run = _run(tmp_path)
    old = run.read()[1]
    spec = BuildSpec.from_dict(raw["spec"])
    fresh = run.open(spec, resume=False, force=True)
    assert fresh == BuildState() and json.loads((tmp_path / STATE_FILE).read_text())["done"] == {}
    state = fresh.with_result("candidates", old.candidates).with_result("plan", old.plan)
    run.save(spec, state)
    assert run.read()[1] == state and tuple(state.finished()) == ("candidates", "plan")


def test_the_typed_fields_of_a_pruned_build_round_trip_as_the_dicts_they_replace(tmp_path):
    """The fields a quant-only build leaves empty: written with the keys the dicts had, read back equal."""
    from adaprune_edge.data.textsets import TextSet
    from adaprune_edge.evaluate.general_text import TextScores
    from adaprune_edge.evaluate.harness import TaskResult
    from adaprune_edge.latency.budget import Solution
    from adaprune_edge.pipeline.results import Confirmation, PrunedEstimate, Recovered, SearchDone, TaskScores, Validated
    from adaprune_edge.prune.engine import PruneConfig
    from adaprune_edge.recover.distill import RecoverResult
    from adaprune_edge.recover.estimate import RecoveryEstimate
    from adaprune_edge.search.rescore import Rescored

    old = _run(tmp_path)[1].read()[1]
    est = RecoveryEstimate(tokens=4096, closure=0.25, ppl=21.5, curve="bench/results/recovery.json")
    pe = PrunedEstimate(recipe=R("Q4_K_M"), r_min=0.2, trial_ratio=0.21, torch_ppl=25.0, quant_factor=1.02,
                        unrecovered_ppl=25.5, recovery=est, estimated_ppl=22.0, feasible=True, reason="ok")
    assert list(pe.to_dict()) == ["recipe", "r_min", "trial_ratio", "torch_ppl", "quant_factor", "unrecovered_ppl",
                                  "recovery", "estimated_ppl", "feasible", "reason"]
    assert list(est.to_dict()) == ["tokens", "closure", "ppl", "curve"]
    lat = old.plan.dense_latency
    sol = Solution(0.2, old.plan.base_structure, lat, lat, "ok", 5)
    plan = dataclasses.replace(old.plan, mode="prune", pruned_estimates=(pe,), solution=sol, recovery_estimate=est)
    conf = Confirmation(trial=3, quant=R("Q4_K_M"), decode_ms=9.5, prefill_tps=200.0, measured=True, ok=True, reason="ok")
    assert list(conf.to_dict()) == ["trial", "quant", "decode_ms", "prefill_tps", "measured", "ok", "reason"]
    text = TextSet("recovery", "input.txt", "records 0%-100%", 8, 256)
    search = SearchDone(n_trials=4, feasible=3, data_sets=dict(old.search.data_sets), confirmations=(conf,),
                        rescored=(Rescored(3, 3.1, 4, 3.2, 8, True, 1.5, 8),))
    pruned = dataclasses.replace(old.prune, config=PruneConfig(ratio=0.2), skipped=None)
    result = RecoverResult(steps=4, tokens=4096, epochs=0.5, seconds=60.0, tokens_per_s=68.3, kl_first=0.5,
                           kl_last=0.3, curve=((1024, 0.5), (4096, 0.3)), stopped="tokens", device="cpu", bf16=True,
                           trainable_params=1000, train_windows=16, config={"train": "decoder"})
    rec = Recovered(result=result, text=text, report_ppl_before=30.0, report_ppl_after=25.0, report_ppl_dense=20.0,
                    closure_measured=0.45, estimate=est)
    task = TaskResult("piqa", "piqa.jsonl", 100, 0.6, 0.05, 0.62, 0.05, 3.0, "torch")
    val = dataclasses.replace(old.validate, zero_shot={"piqa": TaskScores(dense=task, pruned=task),
                                                       "arc_easy": TaskScores(skipped="not found")},
                              general_text={"wikitext2_valid": TextScores(21.0, 22.0, 8, 512, "valid.txt records 50%-100%"),
                                            "ptb_valid": TextScores(skipped="ptb.valid.txt not found")})
    assert val.to_dict()["zero_shot"] == {"piqa": {"dense": task.to_dict(), "pruned": task.to_dict()},
                                          "arc_easy": {"skipped": "not found"}}
    assert list(val.to_dict()["general_text"]["wikitext2_valid"]) == [
        "dense_ppl", "pruned_ppl", "windows", "seq_len", "source", "dense_backend", "pruned_backend"]
    assert val.to_dict()["general_text"]["ptb_valid"] == {"skipped": "ptb.valid.txt not found"}
    state = dataclasses.replace(old, plan=plan, search=search, prune=pruned, recover=rec, validate=val)
    back = BuildState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert back == state
    assert isinstance(back.validate, Validated) and back.recover.result.curve == ((1024, 0.5), (4096, 0.3))
