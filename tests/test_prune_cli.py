"""`adaprune-edge prune` through typer's CliRunner on a tiny Llama folder (real SmolLM2 tokenizer)."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from adaprune_edge.cli.app import app
from tests.conftest import WIKITEXT_VALID

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama saved as an HF folder with the default model's tokenizer (vocab 49152)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from adaprune_edge import models

    cached = sorted((models.cache_dir() / "gguf-as-hf").glob("SmolLM2-135M-Instruct*"))
    if not cached:
        pytest.skip("default model not converted yet (run adaprune-edge inspect once)")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    out = tmp_path_factory.mktemp("tiny")
    LlamaForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(cached[0]).save_pretrained(out)
    return out


def _run(args):
    return runner.invoke(app, ["prune", *map(str, args)], env={"COLUMNS": "200"})


def test_prune_writes_loadable_folder(tiny_dir, tmp_path, shared_data):
    out = tmp_path / "p"
    calib = tmp_path / "calib.txt"  # a slice of wikitext-2 valid (keeps this test fast)
    calib.write_text(WIKITEXT_VALID.read_text()[:40000])
    args = ["--model", tiny_dir, "--ratio", 0.3, "--metric", "wanda", "--allocation", "uniform", "--align", 1,
            "--calib", calib, "--calib-range", "0:0.5", "--n-samples", 4, "--seq-len", 64, "--out", out]
    r = _run(args)
    assert r.exit_code == 0, r.output
    assert "decoder params" in r.output and "asked -30.0%" in r.output
    meta = json.loads((out / "structure.json").read_text())
    assert abs(meta["recipe"]["decoder_ratio"] - 0.3) <= 0.02 and meta["recipe"]["config"]["metric"] == "wanda"
    from adaprune_edge.archs.slicing import load_pruned
    model, tok = load_pruned(out)
    assert tok is not None and model.model.layers[0].mlp.gate_proj.out_features < 128
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    r = _run(args)
    assert r.exit_code == 2 and "--force" in r.output
    assert _run(args + ["--force", "--seed", 1]).exit_code == 0


@pytest.mark.parametrize("extra, message", [
    (["--ratio", 0.0], "--ratio must be in (0, 0.9]"),
    (["--ratio", 0.95], "--ratio must be in (0, 0.9]"),
    (["--metric", "taylr"], "did you mean 'taylor'"),
    (["--allocation", "flap"], "known: global, owl, profile, uniform"),
    (["--calib", "/nonexistent/calib.txt"], "not found"),
    (["--calib", "EMPTY"], "is empty"),
    (["--calib", "SHORT", "--seq-len", 512], "tokens; 1 window(s) of 512 need 512: pass a longer file"),
])
def test_bad_input_one_line_exit_2_nothing_written(tiny_dir, tmp_path, extra, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("only a few words here\n")
    extra = [str(tmp_path / "empty.txt") if e == "EMPTY" else str(tmp_path / "short.txt") if e == "SHORT" else e
             for e in extra]
    base = {"--ratio": "0.2", "--calib": str(tmp_path / "short.txt"), "--seq-len": "4", "--n-samples": "2"}
    for k, v in zip(extra[::2], extra[1::2]):
        base[k] = v
    args = ["--model", tiny_dir, "--out", tmp_path / "out"] + [x for kv in base.items() for x in kv]
    r = _run(args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture(tiny_dir, tmp_path):
    import shutil
    bad = tmp_path / "gpt"
    shutil.copytree(tiny_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (bad / "config.json").write_text(json.dumps(cfg))
    calib = tmp_path / "calib.txt"
    calib.write_text("Some calibration text about the weather and the sea.\n\n" * 50)
    r = _run(["--model", bad, "--ratio", 0.2, "--calib", calib, "--out", tmp_path / "o"])
    assert r.exit_code == 2 and "supported: llama, mistral" in r.output and not (tmp_path / "o").exists()


def test_prune_sequential_obs(tiny_dir, tmp_path, shared_data):
    out = tmp_path / "s"
    calib = tmp_path / "calib.txt"
    calib.write_text(WIKITEXT_VALID.read_text()[:40000])
    r = _run(["--model", tiny_dir, "--ratio", 0.3, "--metric", "obs", "--sequential", "--allocation", "uniform",
              "--head-unit", "query", "--align", 1, "--calib", calib, "--n-samples", 4, "--seq-len", 64, "--out", out])
    assert r.exit_code == 0, r.output
    assert "OBS update, sequential" in r.output
    meta = json.loads((out / "structure.json").read_text())
    cfg = meta["recipe"]["config"]
    assert cfg["sequential"] and cfg["metric"] == "obs" and abs(meta["recipe"]["decoder_ratio"] - 0.3) <= 0.03
    from adaprune_edge.archs.slicing import load_pruned
    model, _ = load_pruned(out)
    assert [l.self_attn.q_proj.out_features // 16 for l in model.model.layers] == [2, 2, 2]
