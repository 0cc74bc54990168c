"""`adaprune-edge search --facade hyperband` and `--multi-objective` end to end through the CLI on a tiny
model (predicted latency, built-in calibration text): both finish, stay within the budget, and record
what makes them different (fidelities below the maximum; a Pareto front of loss vs latency)."""

import json
import math
import statistics

import pytest
from typer.testing import CliRunner

from adaprune_edge.cli.app import app

runner = CliRunner()
VOCAB = 49152  # the tiny models carry the real SmolLM2 tokenizer (conftest.save_tiny_model)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import tiny_model_with_budget

    return tiny_model_with_budget(tmp_path_factory.mktemp("facades"))


def _search(tiny, out, *extra):
    model, dev, budget = tiny
    args = ["search", "--device", str(dev), "--model", str(model), "--quant", "Q8_0", "--budget-ms", f"{budget:.5f}",
            "--max-samples", "8", "--max-seq-len", "64", "--val-windows", "4", "--val-seq-len", "64",
            "--no-warm-start", "--seed", "1", "--calib", "builtin:pydoc",  # builtin:self would sample ~20k tokens
            "--out", str(out), *extra]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return r.output, recs, budget


def test_hyperband_uses_lower_fidelities(tiny, tmp_path):
    output, recs, budget = _search(tiny, tmp_path / "hb", "--facade", "hyperband", "--trials", "5")
    assert json.loads((tmp_path / "hb" / "search.json").read_text())["facade"] == "hyperband"
    assert len(recs) == 5
    fidelities = {r["fidelity"] for r in recs}
    assert min(fidelities) < 4 and max(fidelities) <= 4, fidelities
    ok = [r for r in recs if r["status"] == "ok"]
    assert ok and all(r["decode_ms"] <= budget + 1e-9 for r in ok)
    for r in ok:  # cost is the loss on the trial's own windows; a random tiny model predicts ~uniformly
        assert r["cost"] == pytest.approx(r["loss"], rel=1e-9) == pytest.approx(statistics.fmean(r["window_costs"]), rel=1e-9)
        assert len(r["window_costs"]) == r["fidelity"] and r["ppl"] == pytest.approx(math.exp(r["loss"]), rel=1e-9)
        assert abs(r["loss"] - math.log(VOCAB)) < 0.25, r["loss"]
    assert "best: trial" in output


def test_multi_objective_keeps_a_pareto_front(tiny, tmp_path):
    from adaprune_edge.search.run import pareto_front
    from adaprune_edge.search.trials import TrialRecord

    output, recs, budget = _search(tiny, tmp_path / "mo", "--multi-objective", "--trials", "4")
    assert json.loads((tmp_path / "mo" / "search.json").read_text())["multi_objective"] is True
    assert len(recs) == 4
    ok = [r for r in recs if r["status"] == "ok"]
    assert ok and all(r["decode_ms"] <= budget + 1e-9 for r in ok)
    front = pareto_front([TrialRecord.from_dict(r) for r in recs])
    assert front, "no feasible trial on the front"
    for a in front:  # no trial on the front is dominated in (cost, decode ms) by any feasible trial
        assert not any(b["cost"] <= a.cost and b["decode_ms"] <= a.decode_ms and
                       (b["cost"], b["decode_ms"]) != (a.cost, a.decode_ms) for b in ok)
