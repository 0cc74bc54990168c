"""Validation module and the export / validate CLI on a tiny model: gate, KL, JSON, Modelfile, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaprune_edge import models
from adaprune_edge.archs import ARCHS, slicing as pruning
from adaprune_edge.evaluate import validation
from adaprune_edge.cli.app import app
from adaprune_edge.exporters import gguf, hf, modelfile, vocab

LLAMA = ARCHS.get("llama")  # the tiny test models are Llamas

VOCAB = 49152
runner = CliRunner()


@pytest.fixture(scope="module")
def tok_meta():
    return vocab.from_gguf(models.default_gguf_path())


@pytest.fixture
def tiny_pruned_dir(tiny_llama, default_model, tmp_path):
    """A non-uniform pruned tiny model saved with the default tokenizer (so the CLI can export it)."""
    model = tiny_llama(vocab=VOCAB)
    pruning.prune_attention(LLAMA, model.model.layers[0], [0], [[0, 1]])
    pruning.prune_mlp(LLAMA, model.model.layers[1], list(range(64)))
    return pruning.save_pruned(model, default_model.tokenizer, tmp_path / "tiny"), model


def test_f16_export_passes_gate_and_kl_is_tiny(tiny_llama, tok_meta, tmp_path):
    model = tiny_llama(vocab=VOCAB)
    pruning.prune_mlp(LLAMA, model.model.layers[0], list(range(32)))
    path = gguf.write_model(model, tmp_path / "m.gguf", tok_meta).path
    wins = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(0)).numpy()
    rep = validation.validate(path, wins, torch_model=model, threads=2)
    assert rep.file_type == "F16" and rep.reference == "torch"
    assert rep.passed is True and abs(rep.ppl_rel_diff_vs_torch) < 1e-3
    assert rep.kl_mean < 1e-5 and rep.top1 > 0.99
    # decode speed agrees (within 3x) with an independent llama.cpp measurement of the same file, and the
    # process held at least the file's weights
    from adaprune_edge.latency import backends

    ref = backends.measure(Path(path), backends.BenchSettings(n_prompt=16, n_gen=16, repetitions=3, threads=2))
    assert 1 / 3 < rep.speed.decode_tps * ref.decode_ms_per_token / 1000 < 3, (rep.speed.decode_tps, ref.decode_ms_per_token)
    assert rep.peak_rss_bytes > Path(path).stat().st_size
    json.dumps(rep.to_dict())


def test_gate_rules():
    assert validation.gate("F16", 10.05, 10.0) == (True, pytest.approx(0.005))
    assert validation.gate("F16", 10.2, 10.0)[0] is False
    assert validation.gate("Q4_K", 12.0, 10.0)[0] is None  # quantized files are reported, not gated
    assert validation.gate("F16", 10.0, None) == (None, None)


def test_score_windows_kl_zero_for_identical_and_positive_otherwise():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 50)).astype(np.float32)
    same = validation.score_windows(lambda t: logits, np.zeros((1, 8), int), lambda t: logits)
    assert same.kl[0] == pytest.approx(0.0, abs=1e-6) and same.top1[0] == 1.0
    other = validation.score_windows(lambda t: logits * 0.5, np.zeros((1, 8), int), lambda t: logits)
    assert other.kl[0] > 0.01


def test_cli_export_writes_gguf_json_modelfile(tiny_pruned_dir, tmp_path):
    folder, model = tiny_pruned_dir
    out = tmp_path / "out" / "tiny.gguf"
    res = runner.invoke(app, ["export", "--model", str(folder), "--out", str(out), "--quant", "Q8_0"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.with_suffix(".export.json").read_text())
    assert report["export"]["arch"] == "deci" and report["quant"]["quant"] == "Q8_0"
    assert report["quant"]["mismatches"] == []
    assert (tmp_path / "out" / "tiny.Modelfile").read_text().startswith("FROM ./tiny.gguf")
    again = runner.invoke(app, ["export", "--model", str(folder), "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.Modelfile", "tiny.export.json", "tiny.gguf"]


def test_cli_export_dry_run_writes_nothing(tiny_pruned_dir, tmp_path):
    folder, _ = tiny_pruned_dir
    out = tmp_path / "dry" / "x.gguf"
    res = runner.invoke(app, ["export", "--model", str(folder), "--out", str(out), "--dry-run", "--quant", "Q4_K_M"])
    assert res.exit_code == 0, res.output
    assert "blk.0.attn_q.weight" in res.output and "fall-back" in res.output
    assert not out.parent.exists() or not list(out.parent.iterdir())


@pytest.mark.parametrize("args, message", [
    (["--quant", "Q3_XYZ"], "Q4_K_M"),
    (["--model", "/nonexistent/model.gguf"], "not found"),
])
def test_cli_export_bad_input_one_line_exit_2(args, message, tmp_path):
    out = tmp_path / "bad.gguf"
    res = runner.invoke(app, ["export", "--out", str(out), *args])
    assert res.exit_code == 2 and message in res.output
    assert not list(tmp_path.iterdir())


def test_cli_export_corrupt_gguf(tmp_path):
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    res = runner.invoke(app, ["export", "--model", str(bad), "--out", str(tmp_path / "o.gguf")])
    assert res.exit_code == 2 and "not a readable GGUF" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.gguf"]


def test_cli_validate_tiny_f16(tiny_pruned_dir, tmp_path, shared_data):
    folder, _ = tiny_pruned_dir
    out = tmp_path / "v.gguf"
    tok = str(models.default_gguf_path())
    assert runner.invoke(app, ["export", "--model", str(folder), "--out", str(out), "--quant", "F16",
                               "--tokenizer-from", tok]).exit_code == 0
    res = runner.invoke(app, ["validate", "--gguf", str(out), "--torch", str(folder), "--windows", "2",
                              "--seq-len", "64", "--data", str(shared_data / "wikitext-2" / "valid.txt")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "v.validation.json").read_text())
    assert rep["passed"] is True and abs(rep["ppl_rel_diff_vs_torch"]) < 1e-3
    assert rep["tokenizer_agreement"] == 1.0


def test_modelfile_chatml_and_unknown_template():
    text = modelfile.render("m.gguf", "{{ '<|im_start|>' + message['role'] }}")
    assert text.startswith("FROM ./m.gguf") and 'PARAMETER stop "<|im_end|>"' in text and "TEMPLATE" in text
    assert "TEMPLATE" not in modelfile.render("m.gguf", "{{ bos_token }}[INST]")


def test_hf_export_uniform_loads_with_automodel_and_nonuniform_with_ours(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_llama()
    for layer in model.model.layers:
        pruning.prune_mlp(LLAMA, layer, list(range(64)))
    assert hf.save(model, None, tmp_path / "u").layout == "hf"
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "u").eval()
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x).logits)
    pruning.prune_attention(LLAMA, model.model.layers[0], [1], [[0, 1]])
    assert hf.save(model, None, tmp_path / "n").layout == "adaprune"
    loaded, _ = pruning.load_pruned(tmp_path / "n")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)
