"""`adaprune-edge recover` on a tiny pruned model with the real tokenizer: output in `prune`'s folder format,
a killed run resumed with --resume, bad input as one line."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from adaprune_edge.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, shared_data):
    from conftest import save_tiny_model

    root = tmp_path_factory.mktemp("rec")
    tiny = save_tiny_model(root / "tiny", hidden=64, heads=4, kv_heads=2, ffn=256, layers=2)
    out = root / "pruned"
    r = runner.invoke(app, ["prune", "--model", str(tiny), "--ratio", "0.3", "--metric", "l2", "--calib",
                            str(shared_data / "wikitext-2/valid.txt"), "--n-samples", "4", "--seq-len", "64",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    return tiny, out


def test_recover_resumes_a_killed_run_and_writes_a_pruned_folder(pruned_dir, shared_data, tmp_path):
    from adaprune_edge import models
    from adaprune_edge.cli.recover_cmd import WORK
    from adaprune_edge.archs.slicing import load_pruned
    from adaprune_edge.recover.config import RecoverConfig
    from adaprune_edge.recover.distill import recover
    from adaprune_edge.recover.text import recovery_windows
    from adaprune_edge.archs.structure import Structure

    tiny, pruned = pruned_dir
    text = str(shared_data / "tinyshakespeare/input.txt")
    out = tmp_path / "recovered"
    # a run killed after its first checkpoint (1 step of 4x64 tokens) ...
    student, teacher = models.load(str(pruned)), models.load(str(tiny))
    windows, _ = recovery_windows([text], teacher, 64, 0, record_range=(0.0, 0.2))
    recover(student.model, teacher.model, windows, RecoverConfig(seq_len=64, max_tokens=256, checkpoint_every=1),
            tmp_path / f"{WORK}-{out.name}")
    args = ["recover", "--model", str(pruned), "--teacher", str(tiny), "--out", str(out), "--text", text,
            "--text-range", "0:0.2", "--seq-len", "64", "--tokens", "1024", "--eval", str(shared_data / "ptb/ptb.valid.txt"),
            "--eval-windows", "2"]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "--resume" in r.output  # the checkpoint is not silently dropped
    r = runner.invoke(app, args + ["--resume"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "structure.json").read_text())["recipe"]["recovery"]
    assert rec["resumed_at_step"] == 1 and rec["tokens"] == 1024 and rec["steps"] == 4
    assert rec["text"]["part"].startswith(f"{text} records 0%-20%")
    assert rec["kl_last"] < rec["kl_first"]
    model, _ = load_pruned(out)
    assert Structure.from_model(model) == Structure.from_model(load_pruned(pruned)[0])  # same shapes, new weights
    assert not torch.equal(model.model.layers[0].mlp.down_proj.weight, load_pruned(pruned)[0].model.layers[0].mlp.down_proj.weight)
    assert not (tmp_path / f"{WORK}-{out.name}").exists()
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "exists" in r.output


def test_recover_bad_input_is_one_line(pruned_dir, tmp_path):
    tiny, pruned = pruned_dir
    r = runner.invoke(app, ["recover", "--model", str(pruned), "--teacher", str(tiny), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "needs a bound" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["recover", "--model", str(pruned), "--out", str(tmp_path / "o"), "--tokens", "10",
                            "--train", "everything"])
    assert r.exit_code == 2 and "--train must be one of" in r.output
