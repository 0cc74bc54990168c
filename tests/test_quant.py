"""Quant recipes: parsing, llama.cpp's per-tensor types reproduced exactly, deliberate fall-backs through the
quantizer's overrides, the importance matrix round trip, and the plan's choice between quantization alone
and pruning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaprune_edge.device import Device
from adaprune_edge.pipeline import plan_stages
from adaprune_edge.pipeline import quant_options
from adaprune_edge.errors import ConfigError
from adaprune_edge.exporters import gguf, quantize
from adaprune_edge.exporters.imatrix import Imatrix, collect, flat_imatrix
from adaprune_edge.quant import FTYPES, QuantRecipe
from adaprune_edge.pipeline.quant_options import QuantOption
from adaprune_edge.archs.structure import LayerShape, Structure

R = QuantRecipe.parse


def _odd_structure(hidden: int) -> Structure:
    """Layers that differ in heads and FFN width, some widths off the 256 grid (fall-backs)."""
    layers = tuple(LayerShape(4 if i % 2 else 8, 2 if i % 3 else 1, 256 if i % 2 else 96) for i in range(16))
    return Structure(hidden, 32, 49152, 16, tuple(range(16)), layers)


def test_recipe_names_round_trip_and_bad_names_are_refused():
    r = QuantRecipe.parse("Q4_K_M:fb=IQ4_NL:out=Q5_0:imatrix")
    assert (r.ftype, r.fallback, r.output, r.imatrix) == ("Q4_K_M", "IQ4_NL", "Q5_0", True)
    assert QuantRecipe.parse(r.name) == r
    with pytest.raises(ConfigError, match="did you mean 'Q4_K_M'"):
        QuantRecipe.parse("Q4_KM")
    with pytest.raises(ConfigError, match="fb="):
        QuantRecipe.parse("Q4_K_M:fb=Q9")
    with pytest.raises(ConfigError, match="FTYPE"):
        QuantRecipe.parse("Q4_0:extra")
    with pytest.raises(ConfigError, match="unquantized"):
        QuantRecipe.parse("F16:imatrix")


def test_recipes_are_hashable_values_and_file_type_ids_come_from_gguf_py():
    import llama_cpp

    from adaprune_edge.quant import ftype_name

    assert {R("Q4_K_M:imatrix"): 1}[QuantRecipe("Q4_K_M", imatrix=True)] == 1 and str(R("Q4_0:out=Q5_0")) == "Q4_0:out=Q5_0"
    assert R("Q4_K_M:fb=IQ4_NL:imatrix").label == "Q4_K_M_fb-IQ4_NL_imatrix"
    for n in FTYPES:  # gguf-py's LlamaFileType agrees with the installed llama.cpp's llama_ftype
        assert QuantRecipe(n).ftype_id == getattr(llama_cpp, "LLAMA_FTYPE_ALL_F32" if n == "F32" else f"LLAMA_FTYPE_MOSTLY_{n}")
        assert ftype_name(int(QuantRecipe(n).ftype_id)) == n
    assert ftype_name(3) is None and ftype_name(None) is None  # Q4_1: a file type no recipe names


@pytest.mark.parametrize("hidden", [64, 256])
def test_predicted_tensor_types_equal_what_llama_cpp_writes(tmp_path, hidden):
    st = _odd_structure(hidden)
    f16 = tmp_path / "f16.gguf"
    gguf.write_shape_only(st, f16)
    flat = flat_imatrix(st)
    recipes = [QuantRecipe(n) for n in FTYPES if n not in ("F16", "F32")] + [R(n) for n in (
        "Q4_K_M:fb=IQ4_NL", "Q4_K_M:fb=IQ4_NL:out=Q5_0", "Q5_K_M:fb=Q5_0:out=Q5_0", "IQ4_NL:imatrix",
        "Q4_0:imatrix", "Q3_K_M:fb=IQ4_NL:imatrix")]
    for name in recipes:
        dst = tmp_path / "q.gguf"
        quantize.quantize(f16, dst, name, imatrix=flat)
        rep = quantize.report(dst, st, name)
        assert rep.mismatches == (), (name, rep.mismatches[:3])
        assert abs(rep.file_bytes - st.gguf_bytes(name)) < 2e6  # tensor bytes + metadata


def test_deliberate_fallback_makes_576_wide_q4_k_m_smaller():
    st = Structure.dense(576, 64, 49152, 30, 9, 3, 1536)  # SmolLM2-135M's shape
    plain, steered = st.gguf_bytes(R("Q4_K_M")), st.gguf_bytes(R("Q4_K_M:fb=IQ4_NL:out=Q5_0"))
    assert len(st.fallbacks(R("Q4_K_M"))) == 181  # q/k/v/gate/up rows of 576 and the tied output
    assert 8 * plain / st.params() == pytest.approx(6.17, abs=0.02)  # "Q4_K_M" is ~6.2 bits/weight here
    assert steered < 0.82 * plain


def test_imatrix_round_trips_through_the_file_and_the_quantizer(tmp_path, tiny_llama):
    model = tiny_llama(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=256)
    wins = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
    im = collect(model, wins, ("random",))
    assert im.tokens == 48 and set(im.sums) >= {"blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight"}
    assert im.sums["blk.0.ffn_down.weight"].shape == (128,)
    # by hand: the sum of squares of layer 0's attention input (the normed embeddings)
    with torch.no_grad():
        h = model.model.layers[0].input_layernorm(model.model.embed_tokens(wins)).reshape(-1, 64).double()
    np.testing.assert_allclose(im.sums["blk.0.attn_q.weight"], (h * h).sum(0).numpy(), rtol=1e-4)
    path = im.save(tmp_path / "imatrix.gguf")
    back = Imatrix.load(path)
    assert back.tokens == 48 and back.datasets == ("random",)
    for name, v in im.sums.items():
        np.testing.assert_allclose(back.sums[name], v, rtol=1e-6)


def test_imatrix_is_accepted_by_llama_cpp_and_changes_low_bit_weights(tmp_path):
    st = Structure.dense(256, 32, 49152, 2, 8, 2, 512)
    f16 = tmp_path / "f16.gguf"
    gguf.write_shape_only(st, f16, seed=3)
    rng = np.random.default_rng(0)
    im = Imatrix({t.name: rng.gamma(0.5, 2.0, t.cols).astype(np.float32) for t in st.tensors()}, 100)
    im = Imatrix.load(im.save(tmp_path / "im.gguf"))
    quantize.quantize(f16, tmp_path / "a.gguf", R("IQ4_XS"), imatrix=None)
    quantize.quantize(f16, tmp_path / "b.gguf", R("IQ4_XS:imatrix"), imatrix=im)
    a, b = (tmp_path / "a.gguf").read_bytes(), (tmp_path / "b.gguf").read_bytes()
    assert len(a) == len(b) and a != b  # same types and sizes, different (importance-weighted) values


def test_imatrix_of_another_model_is_refused_and_nothing_is_written(tmp_path):
    st = Structure.dense(256, 32, 49152, 2, 8, 2, 512)
    f16 = tmp_path / "f16.gguf"
    gguf.write_shape_only(st, f16)
    other = flat_imatrix(Structure.dense(128, 32, 49152, 2, 4, 2, 256))
    with pytest.raises(ConfigError, match="does not match the model"):
        quantize.quantize(f16, tmp_path / "x.gguf", R("Q4_0:imatrix"), imatrix=other)
    assert not (tmp_path / "x.gguf").exists() and list(tmp_path.glob(".*")) == []


def test_a_quant_type_the_installed_llama_cpp_lacks_is_refused_with_its_list(monkeypatch):
    import llama_cpp

    from adaprune_edge import quant

    monkeypatch.delattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_IQ4_XS")
    with pytest.raises(ConfigError) as e:
        quant.check_installed(QuantRecipe.parse("IQ4_XS"))
    assert "cannot quantize to IQ4_XS" in str(e.value) and "Q4_K_M" in str(e.value) and "IQ4_XS," not in str(e.value)


# -- the plan -----------------------------------------------------------------------------------------
def _tiny() -> Structure:
    return Structure.dense(128, 32, 49152, 8, 4, 2, 2048)


def test_a_budget_a_lower_bit_quant_meets_needs_no_pruning_and_a_tighter_one_does():
    prof = Device.resolve("raspberry-pi-5")  # bandwidth-bound (predict backend): bytes decide
    base = _tiny()
    names = quant_options.recipes(None, imatrix=False)
    by = {o.recipe.name: o for o in quant_options.options(base, prof, names, None, 0.6)}
    q8, small = by["Q8_0"].decode_ms, by["IQ4_XS:out=IQ4_NL"].decode_ms
    assert small < 0.7 * q8
    opts = {o.recipe.name: o for o in quant_options.options(base, prof, names, (q8 + small) / 2, 0.6)}
    assert opts["IQ4_XS:out=IQ4_NL"].r_min == 0.0 and opts["Q8_0"].r_min > 0.05
    tight = quant_options.options(base, prof, names, 0.97 * small, 0.6)
    assert all(o.r_min is None or o.r_min > 0 for o in tight)
    assert any(o.r_min for o in tight)
    never = quant_options.options(base, prof, names, 0.01, 0.6)
    assert all(o.r_min is None for o in never)
    msg = quant_options.unreachable_message(never, 0.6)
    floor = min(o.floor_ms for o in never)
    assert f"best reachable is IQ4_XS:out=IQ4_NL with 60% pruned: decode {floor:.4g} ms/token > 0.01" in msg
    assert floor < small and "\n" not in msg


def _opt(recipe, r_min, ppl):
    return QuantOption(R(recipe), 1.0, False, r_min, 1, 4.0, ppl)


def test_decide_ships_quant_only_unless_the_pruned_estimate_beats_it(monkeypatch):
    opts = [_opt("Q4_0", 0.0, 20.0), _opt("Q4_0:out=Q5_0", 0.0, 21.0), _opt("Q8_0", 0.2, 18.0)]
    est = {"value": 22.0}
    monkeypatch.setattr(plan_stages, "pruned_estimate",
                        lambda ctx, o, f16: {"recipe": o.recipe, "r_min": o.r_min, "estimated_ppl": est["value"]})
    d = plan_stages.decide(None, opts, 18.0)
    assert d["mode"] == "quant-only" and d["quant"] == R("Q4_0") and "quantization alone" in d["reason"]
    est["value"] = 19.0
    d = plan_stages.decide(None, opts, 18.0)
    assert d["mode"] == "prune" and d["quant"] == R("Q8_0")
    tried = []
    monkeypatch.setattr(plan_stages, "pruned_estimate", lambda ctx, o, f16: tried.append(o.recipe) or
                        {"recipe": o.recipe, "r_min": o.r_min, "estimated_ppl": 30.0})
    d = plan_stages.decide(None, [_opt("Q4_0", 0.0, 20.0), _opt("Q2_K", 0.1, 25.0)], 18.0)
    assert d["mode"] == "quant-only" and tried == []  # a recipe worse than quant-only before pruning is not tried
    monkeypatch.setattr(plan_stages, "pruned_estimate",
                        lambda ctx, o, f16: {"recipe": o.recipe, "r_min": o.r_min, "estimated_ppl": 19.0})
    d = plan_stages.decide(None, [_opt("Q8_0", 0.2, 18.0)], 18.0)  # nothing meets the budget alone
    assert d["mode"] == "prune" and "no quant recipe meets the budget alone" in d["reason"]


def test_pareto_front_keeps_only_points_nothing_beats_on_both_axes():
    from adaprune_edge.pipeline.plots import pareto_front as pareto

    pts = [(10.0, 20.0, "dense Q8_0"), (8.0, 21.0, "Q4_0"), (8.5, 25.0, "pruned 0.1"), (6.0, 30.0, "pruned 0.3"),
           (7.0, 35.0, "pruned 0.2")]
    assert [p[2] for p in pareto(pts)] == ["pruned 0.3", "Q4_0", "dense Q8_0"]


def test_export_with_an_imatrix_of_another_model_is_one_line_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from adaprune_edge.cli.app import app
    from conftest import save_tiny_model

    tiny = save_tiny_model(tmp_path / "tiny", hidden=64, heads=4, kv_heads=2, ffn=128, layers=2)
    other = flat_imatrix(Structure.dense(96, 16, 49152, 2, 6, 2, 256)).save(tmp_path / "other.gguf")
    out = tmp_path / "out" / "m.gguf"
    r = CliRunner().invoke(app, ["export", "--model", str(tiny), "--out", str(out), "--quant", "Q4_0",
                                 "--imatrix", str(other)])
    assert r.exit_code == 2 and "does not match the model" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))
    good = flat_imatrix(Structure.dense(64, 16, 49152, 2, 4, 2, 128)).save(tmp_path / "good.gguf")
    r = CliRunner().invoke(app, ["export", "--model", str(tiny), "--out", str(out), "--quant", "Q4_0",
                                 "--imatrix", str(good)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    st = Structure.dense(64, 16, 49152, 2, 4, 2, 128)
    assert quantize.report(out, st, R("Q4_0:imatrix")).mismatches == ()
