"""kill -9 a build, then --resume: finished work is kept (search trials, finished stages), nothing is
redone or half-written. Tested in the search stage (trial by trial) and in a later stage (after prune),
on a tiny model with the predict backend; the other stages resume through the same state.json path."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaprune_edge.pipeline.build import STAGES
from conftest import SHARED_DATA

TRIALS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import tiny_model_with_budget

    return tiny_model_with_budget(tmp_path_factory.mktemp("kill"))


def _argv(setup, out: Path) -> list[str]:
    model, dev, budget = setup
    return [sys.executable, "-m", "adaprune_edge.cli.app", "build", "--device", str(dev), "--model", str(model),
            "--quant", "Q8_0", "--budget-ms", f"{budget:.5f}", "--trials", str(TRIALS), "--max-samples", "8",
            "--max-seq-len", "64", "--calib", "builtin:pydoc", "--out", str(out),  # builtin:self would sample ~20k tokens
            # recovery: a few steps on a shared-data file (the default would sample 40k tokens and train 10 minutes)
            "--recover-text", str(SHARED_DATA / "tinyshakespeare" / "input.txt"), "--recover-tokens", "2048"]


def _kill_when(argv: list[str], ready, timeout_s: float = 600) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    t0 = time.monotonic()
    try:
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() - t0 < timeout_s, "the build never reached the kill point"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def _trials(out: Path) -> list[dict]:
    f = out / "search" / "trials.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.is_file() else []


def _done(out: Path) -> dict:
    try:
        return json.loads((out / "state.json").read_text())["done"]
    except (OSError, ValueError, KeyError):
        return {}


def _resume(argv: list[str]) -> None:
    r = subprocess.run(argv + ["--resume"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


def _no_partial_files(out: Path) -> None:
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name], "temp file left"


@pytest.mark.e2e
def test_kill_during_search_then_resume_keeps_trials(setup, tmp_path):
    out = tmp_path / "run"
    argv = _argv(setup, out)
    _kill_when(argv, lambda: len(_trials(out)) >= 2)
    before = _trials(out)
    assert 2 <= len(before) < TRIALS and "search" not in _done(out)
    _resume(argv)
    after = _trials(out)
    assert len(after) == TRIALS and [t["index"] for t in after] == list(range(TRIALS))
    assert after[: len(before)] == before, "a finished trial was redone or changed"
    assert set(_done(out)) == set(STAGES)
    assert (out / "model-Q8_0.gguf").is_file() and (out / "report.json").is_file()
    _no_partial_files(out)


@pytest.mark.e2e
def test_kill_after_prune_then_resume_keeps_finished_stages(setup, tmp_path):
    out = tmp_path / "run"
    argv = _argv(setup, out)
    _kill_when(argv, lambda: "prune" in _done(out))
    before = _done(out)
    assert {"plan", "search", "prune"} <= set(before) and "report" not in before
    _resume(argv)
    after = _done(out)
    for stage in before:  # finished stages are reused, not redone
        assert after[stage] == before[stage], stage
    assert set(after) == set(STAGES)
    rep = json.loads((out / "report.json").read_text())
    assert rep["budget_met"] and rep["parity_gate"]["passed"]
    _no_partial_files(out)
