"""`eval` and `compare` end to end through typer's CliRunner on a tiny saved Llama (offline)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adaprune_edge import models
from adaprune_edge.evaluate import harness
from adaprune_edge.evaluate import tasks
from adaprune_edge.cli.app import app
from test_harness import ARC_RECORDS, CORPUS, _write_arc, tiny_tokenizer

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


@pytest.fixture
def setup(tiny_llama, tmp_path):
    """A tiny model folder, a data dir with a 4-example ARC-easy file, and a text file."""
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), seed=2)
    mdir = tmp_path / "tiny"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    data = tmp_path / "data"
    _write_arc(data, [0, 1, 2, 0])
    text = tmp_path / "text.txt"
    text.write_text(" ".join(CORPUS))
    return mdir, data, text, tmp_path


def _run(*args):
    return runner.invoke(app, ["eval", *map(str, args)], env=WIDE)


def test_eval_writes_json_matching_the_library(setup):
    mdir, data, text, tmp = setup
    out = tmp / "r.json"
    r = _run("--model", mdir, "--tasks", "arc_easy", "--data-dir", data, "--limit", 3, "--seed", 7,
             "--data", text, "--seq-len", 16, "--windows", 3, "--out", out)
    assert r.exit_code == 0, r.output
    assert "arc_easy acc" in r.output and "perplexity (3x16)" in r.output
    rep = json.loads(out.read_text())
    t = rep["tasks"][0]
    lm = models.load(str(mdir))
    ref = harness.evaluate_task(harness.TorchScorer(lm.model, lm.tokenizer), tasks.load("arc_easy", data), 3, 7)
    assert (t["n"], t["acc"], t["acc_norm"]) == (3, ref.acc, ref.acc_norm)
    assert rep["windows"]["n_tokens"] == 3 * 15 and rep["windows"]["ppl"] > 1.0 and rep["settings"]["limit"] == 3
    r = _run("--model", mdir, "--tasks", "arc_easy", "--data-dir", data, "--out", out)
    assert r.exit_code == 2 and "exists; pass --force" in r.output


def test_baseline_self_has_zero_kl(setup):
    mdir, _, text, _ = setup
    r = _run("--model", mdir, "--ppl", text, "--seq-len", 16, "--windows", 2, "--baseline", mdir)
    assert r.exit_code == 0, r.output
    assert "top-1 agreement" in r.output and "100.00%" in r.output and "0.00000" in r.output


@pytest.mark.parametrize("args, message", [
    (["--tasks", "arc_easy", "--limit", "0"], "--limit must be at least 1"),
    (["--tasks", "piqa,arc_esy"], "unknown task 'arc_esy' (did you mean 'arc_easy'?); known: arc_challenge"),
    (["--tasks", "piqa"], "valid.jsonl not found"),
    ([], "nothing to evaluate"),
    (["--tasks", "arc_easy", "--baseline", "default"], "--baseline needs --ppl"),
    (["--gguf", "nope.gguf", "--tasks", "arc_easy"], "model file nope.gguf not found"),
])
def test_bad_input_one_line_exit_2(setup, args, message, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    mdir, data, _, _ = setup
    model_args = [] if "--gguf" in args else ["--model", str(mdir)]
    r = runner.invoke(app, ["eval", *model_args, "--data-dir", str(data), *args], env=WIDE)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_missing_field_is_named(setup):
    mdir, data, _, _ = setup
    (data / "arc" / "ARC-Easy-Dev.jsonl").write_text('{"question": {"stem": "q", "choices": []}}\n')
    r = _run("--model", mdir, "--tasks", "arc_easy", "--data-dir", data)
    assert r.exit_code == 2 and "ARC-Easy-Dev.jsonl:1: missing field 'answerKey'" in r.output


def test_compare_shows_retention(setup):
    mdir, data, _, tmp = setup
    dense = tmp / "dense.json"
    assert _run("--model", mdir, "--tasks", "arc_easy", "--data-dir", data, "--out", dense).exit_code == 0
    rep = json.loads(dense.read_text())
    rep["tasks"][0]["acc"] = rep["tasks"][0]["acc"] / 2 if rep["tasks"][0]["acc"] else 0.125
    pruned = tmp / "pruned.json"
    pruned.write_text(json.dumps(rep))
    r = runner.invoke(app, ["compare", str(dense), str(pruned)], env=WIDE)
    assert r.exit_code == 0, r.output
    expected = "50.0%" if json.loads(dense.read_text())["tasks"][0]["acc"] else "–"
    assert "arc_easy acc" in r.output and expected in r.output
    bad = tmp / "bad.json"
    bad.write_text("{}")
    r = runner.invoke(app, ["compare", str(dense), str(bad)], env=WIDE)
    assert r.exit_code == 2 and "not an adaprune-edge eval report" in r.output
