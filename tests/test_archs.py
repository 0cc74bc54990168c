"""Architecture adapters end to end on tiny random models of each family (built from transformers configs):
prune (uniform and, where llama.cpp allows, per-layer widths) → F16 GGUF → llama.cpp PPL within 1% of torch
and logits close; Q8_0 loads and generates; the features each adapter carries (Qwen2 biases, Llama 3 RoPE
factors, Gemma 3 sliding window and layer pattern, Phi-3's fused projections) measurably matter; refusals are
one clear line."""

from __future__ import annotations

import gguf as gguf_pkg
import numpy as np
import pytest
import torch

from adaprune_edge import archs, models
from adaprune_edge.archs.tiny import tiny_model
from adaprune_edge.errors import ConfigError, ExportError, ModelError
from adaprune_edge.runtime import llamacpp as llama_runner
from adaprune_edge.evaluate import validation
from adaprune_edge.exporters import gguf, vocab
from adaprune_edge.archs import slicing
from adaprune_edge.prune.engine import PruneConfig, prune
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse

VOCAB = 49152  # the default model's tokenizer, so llama.cpp gets a real vocabulary; widths stay tiny
WINDOWS = np.random.default_rng(0).integers(3, VOCAB, (2, 48))
LAYERS = {"gemma3_text": 7, "smollm3": 5}  # gemma3: full attention at 5 only; smollm3: no RoPE at 3
NATIVE = {"llama": "llama", "llama3": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
          "gemma3_text": "gemma3", "smollm3": "smollm3", "phi3": "llama"}
PER_LAYER = ("llama", "llama3", "mistral", "qwen2", "phi3")
FAMILIES = list(NATIVE)


@pytest.fixture(scope="module")
def tok_meta() -> vocab.TokenizerMeta:
    return vocab.from_gguf(models.default_gguf_path())


def _model(family: str, **kw):
    return tiny_model(family, vocab=VOCAB, layers=LAYERS.get(family, 3), **kw)


def _scores(path, model) -> validation.WindowScores:
    llm = llama_runner.open_gguf(path, n_ctx=64, threads=2)
    try:
        return validation.score_windows(validation.gguf_logits_fn(llm), WINDOWS, validation.torch_logits_fn(model))
    finally:
        llm.close()


def _max_diff(path, model) -> float:
    llm = llama_runner.open_gguf(path, n_ctx=64, threads=2)
    try:
        got = llama_runner.logits(llm, [int(t) for t in WINDOWS[0]])
    finally:
        llm.close()
    return float(np.abs(got - validation.torch_logits_fn(model)(WINDOWS[0])).max())


def _check_parity(path, model) -> None:
    s = _scores(path, model)
    assert abs(s.ppl / s.ref_ppl - 1) < 0.01, (s.ppl, s.ref_ppl)
    assert max(s.kl) < 1e-4 and min(s.top1) > 0.95, (s.kl, s.top1)
    assert _max_diff(path, model) < 5e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_uniform_prune_exports_with_ppl_parity(family, tok_meta, tmp_path):
    dense = _model(family)
    res = prune(dense, None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", head_unit="query", align=32))
    assert res.decoder_ratio > 0.2
    if family in PER_LAYER:  # heads are pruned: the native qwen2 graph cannot hold them, deci can
        expected = "deci" if (family == "qwen2" or not res.structure.is_uniform) else NATIVE[family]
    else:
        assert res.structure.is_uniform
        expected = NATIVE[family]
    out = gguf.write_model(res.model, tmp_path / "u.gguf", tok_meta)
    assert out.arch == expected
    _check_parity(out.path, res.model)


@pytest.mark.parametrize("family", ["llama3", "qwen2", "phi3"])
def test_per_layer_prune_exports_as_deci_with_ppl_parity(family, tok_meta, tmp_path):
    res = prune(_model(family), None, PruneConfig(ratio=0.35, metric="l2", allocation="global", head_unit="query",
                                                  align=32))
    assert not res.structure.is_uniform
    out = gguf.write_model(res.model, tmp_path / "n.gguf", tok_meta)
    assert out.arch == "deci"
    if family == "qwen2":
        assert {b.split(".")[2] for b in out.biases} == {"attn_q", "attn_k", "attn_v"}
    _check_parity(out.path, res.model)


def test_dense_native_files_match_torch(tok_meta, tmp_path):
    for family in FAMILIES:
        model = _model(family, seed=1)
        out = gguf.write_model(model, tmp_path / f"{family}.gguf", tok_meta)
        assert out.arch == NATIVE[family], family
        _check_parity(out.path, model)


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text", "smollm3"])
def test_uniform_only_families_refuse_per_layer_widths(family, tok_meta, tmp_path):
    model = _model(family)
    with pytest.raises(ConfigError, match=f"{family} can only be pruned uniformly.*llama.cpp's .* layer 0's shapes"):
        prune(model, None, PruneConfig(ratio=0.3, metric="l2", allocation="global"))
    with pytest.raises(ConfigError, match="uniformly"):
        prune(model, None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", protect_first=1))
    with pytest.raises(ConfigError, match="bias compensation"):
        prune(model, None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", bias_compensation=True))
    adapter = archs.adapter_for(model)
    slicing.prune_mlp(adapter, adapter.layers(model)[0], list(range(64)))  # by hand: layer 0 narrower than the others
    with pytest.raises(ExportError, match="can only be pruned uniformly"):
        gguf.write_model(model, tmp_path / "x.gguf", tok_meta)
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text", "llama", "phi3"])
def test_structure_predicts_the_exported_tensor_bytes(family, tok_meta, tmp_path):
    """Structure.gguf_bytes (projections and norms from the adapter: QK-norms, Gemma's post-norms) equals the
    tensor data of the F16 file, dense and pruned."""
    from adaprune_edge.archs.structure import Structure

    dense = _model(family)
    pruned = prune(dense, None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", align=32)).model
    for tag, model in (("dense", dense), ("pruned", pruned)):
        out = gguf.write_model(model, tmp_path / f"{tag}.gguf", tok_meta)
        data = sum(int(t.n_bytes) for t in gguf_pkg.GGUFReader(out.path).tensors)
        assert Structure.from_model(model).gguf_bytes() == data, tag  # F16


def test_phi3_fused_projections_split_into_the_same_function(tmp_path):
    """Phi-3's qkv_proj / gate_up_proj become separate Llama projections on first use, with identical logits;
    a pruned Phi-3 goes to an adaprune folder (transformers would look for the fused tensors) and back."""
    from adaprune_edge.exporters import hf

    model = _model("phi3")
    assert hasattr(model.model.layers[0].self_attn, "qkv_proj")
    tokens = torch.tensor(WINDOWS[:1])
    with torch.no_grad():
        fused = model(tokens).logits
        adapter = archs.adapter_for(model)
        layer = adapter.layers(model)[0]
        assert not hasattr(layer.self_attn, "qkv_proj") and adapter.linear(layer, "attn_k").out_features == 2 * 16
        torch.testing.assert_close(model(tokens).logits, fused, rtol=0, atol=1e-5)
    res = prune(model, None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", head_unit="query", align=32))
    assert hf.save(res.model, None, tmp_path / "hf").layout == "adaprune"
    back, _ = slicing.load_pruned(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(back(tokens).logits, res.model(tokens).logits)


def test_qwen2_biases_are_carried_and_matter(tok_meta, tmp_path):
    model = _model("qwen2")
    out = gguf.write_model(model, tmp_path / "q.gguf", tok_meta)
    assert len(out.biases) == 3 * 3
    exact = _max_diff(out.path, model)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.zero_()
    assert exact < 5e-3 and _max_diff(out.path, model) > 10 * exact


def test_llama3_rope_factors_are_written_and_matter(tok_meta, tmp_path):
    model = _model("llama3")
    with torch.no_grad():  # sharper attention, so where each position attends (RoPE) shows in the logits
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    out = gguf.write_model(model, tmp_path / "l3.gguf", tok_meta)
    reader = gguf_pkg.GGUFReader(out.path)
    factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    assert factors.shape == (8,) and factors[1] == 1.0 and factors[-1] == 8.0 and 1 < factors[2] < 8
    exact = _max_diff(out.path, model)
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
    plain = type(model.model.rotary_emb)(config=model.config)
    model.model.rotary_emb = plain
    assert exact < 5e-3 and _max_diff(out.path, model) > 20 * exact


def test_gemma3_sliding_pattern_follows_dropped_layers(tok_meta, tmp_path):
    model = _model("gemma3_text")
    slicing.drop_layers(model, [1, 2, 3, 4, 5, 6])  # the full-attention layer moves from index 5 to 4
    out = gguf.write_model(model, tmp_path / "g.gguf", tok_meta)
    reader = gguf_pkg.GGUFReader(out.path)
    assert reader.fields["gemma3.attention.sliding_window_pattern"].contents() == [True] * 4 + [False, True]
    assert reader.fields["gemma3.attention.sliding_window"].contents() == 8
    _check_parity(out.path, model)
    exact = _max_diff(out.path, model)
    model.config.sliding_window = 1024  # without the window torch sees more context: logits move
    assert _max_diff(out.path, model) > 20 * exact


@pytest.mark.parametrize("family", ["qwen3", "gemma3_text", "qwen2"])
def test_q8_0_loads_and_generates(family, tok_meta, tmp_path):
    res = prune(_model(family), None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", head_unit="query",
                                                  align=32))
    out = gguf.write_model(res.model, tmp_path / "q8.gguf", tok_meta, quant=R("Q8_0"))
    assert validation.file_type(out.path) == "Q8_0"
    llm = llama_runner.open_gguf(out.path, n_ctx=64, threads=2)
    try:
        text = validation.generate(llm, "The capital of France is", max_tokens=8)
        scores = validation.score_windows(validation.gguf_logits_fn(llm), WINDOWS,
                                          validation.torch_logits_fn(res.model))
    finally:
        llm.close()
    assert len(text) > 0
    assert abs(scores.ppl / scores.ref_ppl - 1) < 0.05 and max(scores.kl) < 0.05


def test_unsupported_architecture_lists_the_supported_ones():
    cfg = type("Cfg", (), {"model_type": "qwen2_moe"})()
    with pytest.raises(ModelError, match=r"architecture 'qwen2_moe' \(did you mean 'qwen2'\?\); "
                                         r"supported: llama, mistral, qwen2, qwen3, gemma3_text, smollm3, phi3$"):
        archs.adapter_for(cfg)


def test_adapter_tensor_names_exist_in_gguf_for_their_arch():
    from gguf import MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES

    from adaprune_edge.archs.structure import LayerShape

    by_name = {v: k for k, v in MODEL_ARCH_NAMES.items()}
    for name in archs.supported():
        a = archs.ARCHS.get(name)
        for arch in {a.gguf_arch, *(["deci"] if a.per_layer else [])}:
            known = {TENSOR_NAMES[t] for t in MODEL_TENSORS[by_name[arch]]}
            roles = {f"blk.{{bid}}.{r}" for r, _ in a.layer_tensors(LayerShape(4, 2, 64), 64, 16)}
            if arch == "deci":
                roles = {r for r in roles if "q_norm" not in r and "k_norm" not in r}
            assert roles <= known, (name, arch, roles - known)


def test_smollm3_nope_layers_block_layer_removal(tok_meta, tmp_path):
    model = _model("smollm3")
    assert [layer.self_attn.use_rope for layer in model.model.layers] == [True, True, True, False, True]
    with pytest.raises(ConfigError, match="smollm3 layers cannot be removed"):
        prune(model, None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", depth_share=0.5))
    slicing.drop_layers(model, [1, 2, 3, 4])  # the NoPE layer moves from index 3 to 2
    with pytest.raises(ExportError, match="NoPE layers are not every 4th"):
        gguf.write_model(model, tmp_path / "s.gguf", tok_meta)


def test_uniform_only_search_space_samples_only_loadable_configs():
    from adaprune_edge.search.space import SpaceBounds, build_space, to_prune_config

    cs = build_space(SpaceBounds(r_min=0.2, r_max=0.3, uniform_only=True), seed=0)
    adapter = archs.ARCHS.get("qwen3")
    for values in cs.sample_configuration(50):
        cfg, _ = to_prune_config(dict(values), align=32, seed=0)
        adapter.check_prune(cfg)  # raises ConfigError for anything llama.cpp could not load
        assert (cfg.allocation, cfg.protect_first, cfg.protect_last, cfg.bias_compensation,
                cfg.reconstruction) == ("uniform", 0, 0, False, False)
    free = build_space(SpaceBounds(r_min=0.2, r_max=0.3), seed=0)
    assert {dict(v)["allocation"] for v in free.sample_configuration(50)} > {"uniform"}


def test_search_bounds_follow_the_model_family(tmp_path):
    from types import SimpleNamespace

    from adaprune_edge.search.run import search_bounds

    from adaprune_edge.search.space import SpaceBounds

    bounds = SpaceBounds(r_min=0.2, r_max=0.3)
    for family, uniform_only in (("qwen3", True), ("gemma3_text", True), ("qwen2", False), ("llama", False)):
        folder = tmp_path / family
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"model_type": "{family}"}}')
        assert search_bounds(SimpleNamespace(model=str(folder), bounds=bounds)).uniform_only is uniform_only
    assert search_bounds(SimpleNamespace(model="default", bounds=bounds)).uniform_only is False


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "gemma3_text", "llama3", "phi3"])
def test_pruned_folder_round_trips(family, tmp_path):
    model = _model(family)
    res = prune(model, None, PruneConfig(ratio=0.3, metric="l2", allocation="uniform", head_unit="query", align=32))
    if family == "gemma3_text":
        slicing.drop_layers(res.model, [0, 2, 3, 4, 5, 6])
    slicing.save_pruned(res.model, None, tmp_path / "p")
    back, _ = slicing.load_pruned(tmp_path / "p")
    tokens = torch.tensor(WINDOWS[:1])
    with torch.no_grad():
        torch.testing.assert_close(back(tokens).logits, res.model(tokens).logits)


def test_prune_cli_refuses_per_layer_widths_for_qwen3_in_one_line(tmp_path):
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from adaprune_edge.cli.app import app

    models.load("default")  # caches the default tokenizer as an HF folder
    tok = AutoTokenizer.from_pretrained(next((models.cache_dir() / "gguf-as-hf").glob("SmolLM2*")))
    _model("qwen3").save_pretrained(tmp_path / "q3")
    tok.save_pretrained(tmp_path / "q3")
    r = CliRunner().invoke(app, ["prune", "--model", str(tmp_path / "q3"), "--ratio", "0.2", "--allocation", "global",
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert "qwen3 can only be pruned uniformly" in r.output and "layer 0's shapes" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()
