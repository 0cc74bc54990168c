"""Per-tensor quant allocation (bitalloc/): recipes that carry one type per tensor, the sensitivity
measured from llama.cpp's real quantization, the allocator under a device's limits, the recipe file and
`export --quant-file / --quant auto`. Tiny random Llamas with the default model's vocabulary."""

from __future__ import annotations

import json

import gguf as gguf_pkg
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from adaprune_edge import models
from adaprune_edge.archs.structure import Structure
from adaprune_edge.bitalloc import recipe_file, sensitivity, solver
from adaprune_edge.device import Device
from adaprune_edge.errors import ConfigError, LatencyError
from adaprune_edge.exporters import gguf, imatrix as imx, quantize, vocab
from adaprune_edge.quant import QuantRecipe

VOCAB = 49152


@pytest.fixture(scope="module")
def tok_meta() -> vocab.TokenizerMeta:
    return vocab.from_gguf(models.default_gguf_path())


@pytest.fixture
def tiny_f16(tiny_llama, tok_meta, tmp_path):
    """(model, F16 GGUF, imatrix on random windows) of a tiny Llama whose ffn_down rows take K-types."""
    model = tiny_llama(vocab=VOCAB, hidden=64, ffn=256, layers=2)
    f16 = gguf.write_model(model, tmp_path / "f16.gguf", tok_meta).path
    windows = torch.randint(3, 1000, (3, 32))
    return model, f16, imx.collect(model, windows[:2]), windows


def _types(st: Structure, pick) -> dict[str, str]:
    return {t.name: pick(t) for t in st.tensors()}


def test_an_allocated_recipe_names_its_content_and_parses_once_registered():
    types = {"blk.0.attn_q.weight": "Q4_0", "blk.0.ffn_down.weight": "Q8_0", "token_embd.weight": "Q4_0"}
    r = QuantRecipe.allocated(types)
    assert r.name == f"Q4_0:alloc={r.digest}:imatrix" and len(r.digest) == 8
    assert QuantRecipe.parse(r.name) == r and r.type_of("blk.0.ffn_down.weight").name == "Q8_0"
    other = QuantRecipe.allocated({**types, "blk.0.attn_q.weight": "Q5_0"}, register=False)
    assert other.digest != r.digest
    with pytest.raises(ConfigError, match="not loaded: pass its recipe file"):
        QuantRecipe.parse(other.name)
    with pytest.raises(ConfigError, match="takes no fb="):
        QuantRecipe.parse(r.name + ":fb=Q4_0")


def test_llama_cpp_writes_exactly_the_allocated_types(tiny_f16, tmp_path):
    """Every 2-D tensor of the quantized file has the allocation's type (layer tensors through per-tensor
    overrides, the tied embedding through token_embedding_type), and Structure predicts the bytes."""
    model, f16, im, _ = tiny_f16
    st = Structure.from_model(model)
    cycle = ["Q4_0", "Q5_1", "IQ4_NL", "Q8_0"]
    types = {n: ("Q4_K" if "ffn_down" in n else cycle[i % 4]) for i, n in enumerate(t.name for t in st.tensors())}
    r = QuantRecipe.allocated(types)
    out = tmp_path / "alloc.gguf"
    quantize.quantize(f16, out, r, imatrix=im)
    real = quantize.tensor_types(out)
    assert {n: real[n] for n in types} == types
    reader = gguf_pkg.GGUFReader(str(out))
    assert sum(int(t.n_bytes) for t in reader.tensors) == st.gguf_bytes(r)
    assert quantize.report(out, st, r).mismatches == ()


def test_sensitivity_is_the_imatrix_weighted_error_of_llama_cpps_quantization(tiny_f16, tmp_path):
    """Q8_0 (which llama.cpp quantizes without the imatrix) matches gguf-py's Q8_0 round trip weighted by
    the imatrix to 1e-4 relative; errors fall with bits on every tensor: Q4_0 > Q5_0 > Q8_0; 256-block
    types are measured only on the 256-wide ffn_down rows."""
    model, f16, im, _ = tiny_f16
    err = sensitivity.measure(f16, im, tmp_path, types=("Q8_0", "Q5_0", "Q4_0", "Q4_K"))
    ref = {t.name: np.asarray(gguf_pkg.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(
        [int(x) for x in reversed(t.shape)]) for t in gguf_pkg.GGUFReader(str(f16)).tensors if len(t.shape) == 2}
    for name, w in ref.items():
        q8 = gguf_pkg.quants.dequantize(gguf_pkg.quants.quantize(w, gguf_pkg.GGMLQuantizationType.Q8_0),
                                        gguf_pkg.GGMLQuantizationType.Q8_0).reshape(w.shape)
        m = im.mean(name).astype(np.float64)
        expect = (m * ((q8 - w) ** 2).sum(0)).sum() / (m * (w.astype(np.float64) ** 2).sum(0)).sum()
        assert err[name]["Q8_0"] == pytest.approx(expect, rel=1e-4)
        assert err[name]["Q4_0"] > err[name]["Q5_0"] > err[name]["Q8_0"] > 0
        assert ("Q4_K" in err[name]) == ("ffn_down" in name)


def test_the_allocator_meets_the_budget_and_beats_every_uniform_allocation_that_does(tiny_f16):
    """On a synthetic sensitivity: the allocation meets the decode budget (predicted), its damage is no
    more than that of any single type for all tensors that also meets it, a loose budget gets the least
    damaging type everywhere, and a budget below the cheapest types is refused naming the figure."""
    model, _, _, _ = tiny_f16
    st = Structure.from_model(model)
    rng = np.random.default_rng(0)
    types = ("Q8_0", "Q5_0", "Q4_0")
    errors = {t.name: {q: e * s for q, e in zip(types, (0.001, 0.02, 0.06))} for t in st.tensors()
              for s in [rng.uniform(0.5, 2.0)]}
    sens = sensitivity.Sensitivity("k", errors, {n: rng.uniform(0.1, 3.0) for n in errors}, {})
    dev = Device.resolve("raspberry-pi-5")
    ms = {q: dev.predict(st, QuantRecipe.allocated(_types(st, lambda t, q=q: q), register=False)).decode_ms_per_token
          for q in types}
    budget_ms = (ms["Q5_0"] + ms["Q4_0"]) / 2
    a = solver.allocate(st, sens, solver.device_check(st, dev, budget_ms))
    assert a.binding.ok and dev.predict(st, a.recipe).decode_ms_per_token <= budget_ms
    uniform = [sum(sens.damage(n, q) for n in errors) for q in types if ms[q] <= budget_ms]
    assert uniform and a.damage <= min(uniform) + 1e-12
    assert a.damage == pytest.approx(sum(sens.damage(n, q) for n, q in a.recipe.assign))
    loose = solver.allocate(st, sens, solver.device_check(st, dev, ms["Q8_0"] * 2))
    assert {q for _, q in loose.recipe.assign} == {"Q8_0"}
    with pytest.raises(LatencyError, match="cheapest types give decode"):
        solver.allocate(st, sens, solver.device_check(st, dev, ms["Q4_0"] * 0.9))


def test_the_recipe_file_round_trips_and_refuses_edits_and_other_models(tmp_path, tiny_llama):
    st = Structure.from_model(tiny_llama(layers=2))
    r = QuantRecipe.allocated(_types(st, lambda t: "Q5_0"))
    path = recipe_file.save(tmp_path / "m.quant.json", r, device="raspberry-pi-5")
    assert recipe_file.load(path) == r and recipe_file.load_all(tmp_path) == [r]
    d = json.loads(path.read_text())
    d["tensors"]["blk.0.attn_q.weight"] = "Q8_0"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="hash to"):
        recipe_file.load(path)
    with pytest.raises(ConfigError, match="does not match this model"):
        recipe_file.check_matches(r, Structure.from_model(tiny_llama(layers=3)))


def test_export_quant_file_writes_the_allocation_and_auto_needs_a_device(tiny_llama, tmp_path):
    from adaprune_edge.archs.slicing import save_pruned
    from adaprune_edge.cli.app import app

    model = tiny_llama(vocab=VOCAB, hidden=64, ffn=256, layers=2)
    tok = models.load("default").tokenizer
    save_pruned(model, tok, tmp_path / "m", {})
    st = Structure.from_model(model)
    r = QuantRecipe.allocated(_types(st, lambda t: "Q8_0" if "attn_v" in t.name else "Q4_0"), imatrix=False)
    qfile = recipe_file.save(tmp_path / "a.quant.json", r)
    out = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "a.gguf"),
                                   "--quant-file", str(qfile)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert quantize.tensor_types(tmp_path / "a.gguf")["blk.1.attn_v.weight"] == "Q8_0"
    assert quantize.tensor_types(tmp_path / "a.gguf")["blk.1.attn_q.weight"] == "Q4_0"
    bad = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "b.gguf"), "--quant", "auto"])
    assert bad.exit_code != 0 and "add --device" in bad.output and "Traceback" not in bad.output
