"""`build` end to end on a tiny random Llama with the this-host profile and a tight measured budget;
`tradeoff` writes a real plot; bad input is one line and exit 2."""

import json
import struct

import pytest
from typer.testing import CliRunner

from adaprune_edge.cli.app import app
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import save_tiny_model

    # decoder weights comparable to the embedding, so pruning moves measured latency
    return save_tiny_model(tmp_path_factory.mktemp("tinyb"), hidden=128, heads=4, kv_heads=2, ffn=2048, layers=8)


def _pi5_build(tiny_dir, budget, out, shared_data, recover_tokens, *extra):
    """`build` of the tiny model for raspberry-pi-5 (predicted latency) at `budget` ms/token; its report."""
    r = runner.invoke(app, ["build", "--device", "raspberry-pi-5", "--model", str(tiny_dir), "--budget-ms",
                            f"{budget:.4f}", "--trials", "2", "--calib", "builtin:pydoc", "--max-samples", "8",
                            "--max-seq-len", "64", "--out", str(out), "--recover-tokens", str(recover_tokens),
                            "--recover-text", str(shared_data / "tinyshakespeare/input.txt"), *extra], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return json.loads((out / "report.json").read_text())


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.e2e
def test_build_tiny_meets_measured_budget_and_matches_validate(tiny_dir, shared_data, tmp_path):
    from adaprune_edge import profiles
    from adaprune_edge.latency.budget import uniform
    from adaprune_edge.models import load
    from adaprune_edge.latency.roofline import predict
    from adaprune_edge.archs.structure import Structure

    # this host's figures with the roofline backend: a tiny model's ~0.5 ms/token is too close to this VM's
    # run-to-run noise for a measured budget to be a stable test (the real model is measured in bench/)
    dev = tmp_path / "tinyhost.yaml"
    dev.write_text("extends: this-host\nbackend: predict\n")
    prof = profiles.load_profile(str(dev))
    base = Structure.from_model(load(str(tiny_dir)).model)
    dense = predict(base, R("Q8_0"), prof).decode_ms_per_token
    half = predict(uniform(base, 0.5, R("Q8_0")), R("Q8_0"), prof).decode_ms_per_token
    assert half < dense
    budget = half + 0.5 * (dense - half)
    out = tmp_path / "run"
    args = ["build", "--device", str(dev), "--model", str(tiny_dir), "--quant", "Q8_0", "--budget-ms",
            f"{budget:.4f}", "--trials", "4", "--calib", str(shared_data / "wikitext-2/valid.txt"),
            "--max-samples", "8", "--max-seq-len", "64", "--out", str(out),
            "--recover-text", str(shared_data / "tinyshakespeare/input.txt"), "--recover-tokens", "4096"]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["budget_met"] and rep["latency_source"] == "predicted"
    # the shipped model is the recovered one: distilled 4096 tokens, KL to the dense model fell, and the
    # parity gate below compares the F16 GGUF with the recovered torch model
    rec = rep["recovery"]
    assert rec["tokens"] == 4096 and rec["kl_last"] < rec["kl_first"] and rec["text"].endswith("input.txt")
    assert (out / "recovered" / "structure.json").is_file() and not (out / "recover-work").exists()
    assert rep["data_sets"]["recovery"]["tokens"] >= 4096
    assert rep["pruned"]["decode_ms_per_token"] <= budget < rep["dense"]["decode_ms_per_token"]
    assert rep["parity_gate"]["passed"] and abs(rep["parity_gate"]["rel_diff"]) < 0.01
    for name in ("model-Q8_0.gguf", "Modelfile", "report.md", "trials.csv", "tradeoff.png"):
        assert (out / name).is_file(), name
    assert _png_size(out / "tradeoff.png")[0] > 400
    # a separate `validate` of the shipped file gives the same perplexity on the same windows
    from adaprune_edge.pipeline.context import BuildContext
    from adaprune_edge.pipeline.build import BuildSpec, RunDir
    from adaprune_edge.evaluate.validation import validate

    spec = BuildSpec.from_dict(json.loads((out / "state.json").read_text())["spec"])
    windows = BuildContext(spec, RunDir(out), None).report_windows().numpy()
    again = validate(out / "model-Q8_0.gguf", windows)
    assert again.ppl == pytest.approx(rep["pruned"]["ppl"], rel=1e-4)
    # nothing is redone on --resume of a finished build; a second build without --resume/--force refuses
    r2 = runner.invoke(app, args + ["--resume"], env={"COLUMNS": "200"})
    assert r2.exit_code == 0 and "done earlier" in r2.output
    r3 = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r3.exit_code == 2 and "--resume" in r3.output


@pytest.mark.e2e
def test_tradeoff_plot_and_json(tiny_dir, shared_data, tmp_path):
    out = tmp_path / "t"
    r = runner.invoke(app, ["tradeoff", "--device", "raspberry-pi-5", "--devices", "pixel-8", "--model", str(tiny_dir),
                            "--ratios", "0,0.1,0.2,0.3,0.5", "--metric", "l2", "--calib",
                            str(shared_data / "wikitext-2/valid.txt"), "--windows", "2", "--out", str(out)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    data = json.loads((out / "tradeoff.json").read_text())
    assert len(data["points"]) >= 5
    ms = [p["latency_ms"]["raspberry-pi-5"] for p in data["points"]]
    assert ms == sorted(ms, reverse=True)  # predicted latency falls as the ratio rises
    w, h = _png_size(out / "tradeoff.png")
    assert w > 400 and h > 300


def test_build_bad_input_is_one_line(tmp_path):
    r = runner.invoke(app, ["build", "--device", "raspbery-pi-5", "--dry-run"])
    assert r.exit_code == 2 and "did you mean 'raspberry-pi-5'" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["build", "--device", "this-host", "--budget-ms", "5", "--target-tps", "100"])
    assert r.exit_code == 2 and "not both" in r.output
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    from adaprune_edge.pipeline.build import BuildSpec, RunDir
    from adaprune_edge.errors import OutputExistsError, ConfigError

    with pytest.raises(OutputExistsError):
        RunDir(tmp_path / "x").open(BuildSpec(device="this-host"), resume=False, force=False)
    with pytest.raises(ConfigError, match="not an adaprune-edge build"):
        RunDir(tmp_path / "x").open(BuildSpec(device="this-host"), resume=True, force=False)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.e2e
def test_build_ships_the_dense_quantized_file_when_a_smaller_quant_meets_the_budget(tiny_dir, shared_data, tmp_path):
    from adaprune_edge import profiles
    from adaprune_edge.models import load
    from adaprune_edge.latency.roofline import predict
    from adaprune_edge.archs.structure import Structure

    prof = profiles.load_profile("raspberry-pi-5")  # bandwidth-bound: fewer bytes per token decode faster
    base = Structure.from_model(load(str(tiny_dir)).model)
    q8, small = (predict(base, q, prof).decode_ms_per_token for q in (R("Q8_0"), R("IQ4_XS:out=IQ4_NL")))
    budget = small + 0.3 * (q8 - small)  # Q8_0 would need pruning; 4-bit recipes with a 4-bit output do not
    out = tmp_path / "run"
    rep = _pi5_build(tiny_dir, budget, out, shared_data, 2048)
    assert rep["budget_met"] and rep["pruned"]["decode_ms_per_token"] <= budget
    opts = {o["recipe"]: o for o in rep["quant_options"]}
    assert opts["Q8_0:imatrix"]["r_min"] != 0.0 and opts[rep["quant_only"]["recipe"]]["r_min"] == 0.0  # Q8_0 needs pruning (or cannot)
    assert rep["parity_gate"]["passed"] and (out / rep["gguf"].split("/")[-1]).is_file()
    # every stage keeps its process's peak RSS; the build's peak is the largest (a resumed build keeps them)
    peaks = rep["stage_peak_rss_bytes"]
    assert set(peaks) == {"candidates", "plan", "search", "prune", "recover", "export", "validate"}
    assert all(v > 50e6 for v in peaks.values()) and rep["build_peak_rss_bytes"] >= max(peaks.values())
    # the per-tensor allocation is one more candidate, solved under the budget and scored like the uniform
    # recipes, KL to the dense model included; its recipe file makes a resumed build parse its name
    alloc = [o for o in rep["quant_options"] if ":alloc=" in o["recipe"]]
    assert len(alloc) == 1 and alloc[0]["r_min"] == 0.0 and alloc[0]["decode_ms"] <= budget
    assert all(o["kl"] is not None and o["kl"] >= 0 for o in rep["quant_options"] if o["ppl"] is not None)
    assert (out / f"alloc-{alloc[0]['recipe'].split('alloc=')[1][:8]}.quant.json").is_file()
    if ":alloc=" in rep["quant"]:
        assert (out / rep["gguf"].split("/")[-1]).with_suffix(".quant.json").is_file()
        assert rep["allocation"]["recipe"] == rep["quant"] and len(rep["allocation"]["tensors"]) > 0
    else:
        assert rep["allocation"] is None
    import adaprune_edge.quant as quant_module

    quant_module._ALLOCATIONS.clear()  # as a new process: only the run folder's recipe files name them
    assert _pi5_build(tiny_dir, budget, out, shared_data, 2048, "--resume") == rep  # nothing redone, nothing changed
    # a random tiny model's perplexities are noise: the plan may try pruning, and which file wins export's
    # check depends on the trial's recipe. The rule under test holds either way: the shipped file is never
    # worse on the objective windows than the best file quantization alone gives
    exported = json.loads((out / "state.json").read_text())["done"]["export"]
    shipped = exported["objective_ppl"] or opts[rep["quant"]]["ppl"]
    assert shipped <= rep["quant_only"]["objective_ppl"] * (1 + 1e-9)
    if rep["mode"] == "quant-only":
        assert rep["decoder_ratio"] == 0.0 and rep["recipe"] is None and rep["quant"] == rep["quant_only"]["recipe"]
        assert rep["pruned"]["ppl"] == pytest.approx(rep["quant_only"]["ppl"])  # the same file, scored once


@pytest.mark.e2e
def test_build_prunes_when_the_budget_is_below_every_dense_recipe(tiny_dir, shared_data, tmp_path):
    from adaprune_edge import profiles
    from adaprune_edge.latency.roofline import predict
    from adaprune_edge.models import load
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.pipeline.quant_options import recipes

    prof = profiles.load_profile("raspberry-pi-5")
    base = Structure.from_model(load(str(tiny_dir)).model)
    fastest = min(predict(base, q, prof).decode_ms_per_token for q in recipes(None, True))
    budget = round(0.9 * fastest, 4)  # no dense recipe meets it: only pruning can (as passed: 4 decimals)
    out = tmp_path / "run"
    rep = _pi5_build(tiny_dir, budget, out, shared_data, 1024)
    assert all(o["r_min"] is None or o["r_min"] > 0 for o in rep["quant_options"])  # no quant-only file fits
    assert rep["mode"] == "pruned" and rep["decoder_ratio"] > 0 and rep["recipe"] is not None
    assert rep["budget_met"] and rep["pruned"]["decode_ms_per_token"] <= budget
    assert rep["search_cost"]["trials"] == rep["trials"] and rep["search_cost"]["chosen"] is not None
    assert rep["parity_gate"]["passed"] and (out / rep["gguf"].split("/")[-1]).is_file()


@pytest.mark.parametrize("mode, releases_after", [("quant-only", "plan"), ("prune", "prune")])
def test_statistics_are_dropped_once_no_stage_reads_them(mode, releases_after):
    """Calibration statistics (~0.4 GB on the default model) must not stay resident through export and
    validate: they are forgotten after the plan when it ships the dense model, else after the prune."""
    from types import SimpleNamespace

    from adaprune_edge.pipeline.context import BuildContext
    from adaprune_edge.pipeline.build import STAGES, BuildSpec

    forgotten: list[str] = []
    ctx = BuildContext(BuildSpec(device="raspberry-pi-5"), run=None, hooks=None)
    ctx._cache["data_ctx"] = SimpleNamespace(forget_statistics=lambda: forgotten.append("data_ctx"))
    for stage in STAGES[: STAGES.index(releases_after) + 1]:
        if stage == "plan":
            ctx.state = ctx.state.with_result("plan", SimpleNamespace(mode=mode))
        assert forgotten == []
        ctx.release(stage)
    assert forgotten == ["data_ctx"]
