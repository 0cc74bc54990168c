"""`adaprune-edge bench` and `adaprune-edge profile` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from adaprune_edge import models, profiles
from adaprune_edge.cli.app import app

runner = CliRunner()


def test_bench_predict_on_gguf_json():
    res = runner.invoke(app, ["bench", "--device", "raspberry-pi-5", "--gguf", str(models.default_gguf_path()),
                              "--backend", "predict", "--json"])
    assert res.exit_code == 0, res.output
    (rep,) = json.loads(res.output)
    p = profiles.load_profile("raspberry-pi-5")
    # ~97 MB read per token at 9.5 GB/s plus 30 x 0.03 ms: about 11 ms
    assert rep["backend"] == "predict" and 9.0 < rep["decode_ms_per_token"] < 13.0
    assert rep["decode_ms_per_token"] > 96.5 / p.mem_bandwidth_gbs


def test_bench_bad_input_is_one_line():
    res = runner.invoke(app, ["bench", "--device", "raspberry-pi-5"])
    assert res.exit_code == 2 and "exactly one of --model or --gguf" in res.output
    res = runner.invoke(app, ["bench", "--device", "raspberry-pi-5", "--model", "default", "--quant", "Q3_XX"])
    assert res.exit_code == 2 and "unknown quant type" in res.output
    res = runner.invoke(app, ["bench", "--device", "this-host", "--gguf", str(models.default_gguf_path()),
                              "--ssh", "pi@bad host"])
    assert res.exit_code == 2 and "not of the form user@host" in res.output


@pytest.mark.e2e
def test_bench_local_table_on_default_gguf():
    res = runner.invoke(app, ["bench", "--device", "this-host", "--gguf", str(models.default_gguf_path()),
                              "--n-prompt", "16", "--n-gen", "16", "--reps", "3", "--no-cache", "--json"])
    assert res.exit_code == 0, res.output
    measured, predicted = json.loads(res.output)
    assert measured["measured"] and measured["backend"] == "local" and len(measured["decode_ms_samples"]) == 3
    assert measured["peak_rss_bytes"] > 50e6 and not predicted["measured"]
    # measured and predicted within a factor of 3 both ways (the roofline is fitted to this host: this-host)
    ratio = measured["decode_ms_per_token"] / predicted["decode_ms_per_token"]
    assert 0.33 < ratio < 3, (measured["decode_ms_per_token"], predicted["decode_ms_per_token"])


@pytest.mark.e2e
def test_profile_writes_fitted_yaml(tmp_path):
    pytest.importorskip("adaprune_edge.exporters.gguf")
    out = tmp_path / "fitted.yaml"
    args = ["profile", "--device", "this-host", "--quants", "Q4_K_M", "--shapes", "4", "--n-prompt", "32",
            "--n-gen", "16", "--out", str(out), "--no-cache"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "held-out decode error" in res.output
    p = profiles.load_profile(str(out))  # a valid profile
    # memory-bound (a bandwidth slope) or compute-bound (a decode FLOP slope; this host): one of them fitted
    assert (1.0 < p.mem_bandwidth_gbs < 200.0 or 1.0 < p.decode_gflops < 1000.0) and p.threads == 2
    assert p.budget == profiles.load_profile("this-host").budget  # the starting profile's budget is kept
    assert "Held-out decode error" in out.read_text() and "extends" not in yaml.safe_load(out.read_text())
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
