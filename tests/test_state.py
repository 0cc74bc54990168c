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

FIXTURE = Path(__file__).parent / "data" / "state-quant-only.json"


def _run(tmp_path: Path) -> tuple[dict[str, Any], RunDir]:
    shutil.copyfile(FIXTURE, tmp_path / STATE_FILE)
    return json.loads(FIXTURE.read_text()), RunDir(tmp_path)


def _without_family(d: Any) -> Any:
    """Structures written before they carried their family (`family` is added on reading, default llama)."""
    if isinstance(d, dict):
        return {k: _without_family(v) for k, v in d.items() if k != "family"}
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
    assert isinstance(val.quant_only, QuantOnly) and val.quant_only.recipe == "Q8_0:imatrix"
    assert state.plan.model_info.n_layer == 30 and state.export.quant_report.file_bytes == 144812800
    assert state.search.data_sets["report"].source == "builtin:self"
    # written back with the same keys and values (today's main reads it)
    assert _without_family(json.loads(json.dumps(state.to_dict()))) == raw["done"]


def test_the_report_rebuilt_from_a_resumed_state_is_the_one_written(tmp_path):
    raw, run = _run(tmp_path)
    state = dataclasses.replace(run.read()[1], report=None)  # as the report stage sees it
    rep = json.loads(json.dumps(build_report(state, BuildSpec.from_dict(raw["spec"]))))
    old = raw["done"]["report"]["report"]
    assert list(rep) == list(old)
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
