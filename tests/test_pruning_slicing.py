import torch

from adaprune_edge.archs import ARCHS, slicing as pruning
from adaprune_edge.archs.structure import LayerShape, Structure

LLAMA = ARCHS.get("llama")  # the tiny test models are Llamas


def _logits(m, ids):
    with torch.no_grad():
        return m(input_ids=ids, use_cache=False).logits


def test_keeping_everything_is_exact(tiny_llama):
    m = tiny_llama(hidden=96, heads=6, kv_heads=2)
    ids = torch.randint(0, 256, (2, 12))
    ref = _logits(m, ids)
    for layer in m.model.layers:
        pruning.prune_attention(LLAMA, layer, [0, 1], [[0, 1, 2], [0, 1, 2]])
        pruning.prune_mlp(LLAMA, layer, list(range(128)))
    pruning.drop_layers(m, [0, 1, 2])
    torch.testing.assert_close(_logits(m, ids), ref)


def test_sliced_heads_equal_masked_dense(tiny_llama):
    """Removing q head 1 of group 0 equals zeroing its o_proj columns in the dense model."""
    m = tiny_llama(layers=1, heads=4, kv_heads=2)
    ids = torch.randint(0, 256, (1, 10))
    masked = tiny_llama(layers=1, heads=4, kv_heads=2)
    with torch.no_grad():
        masked.model.layers[0].self_attn.o_proj.weight[:, 16:32] = 0  # head 1 (head_dim 16)
        masked.model.layers[0].mlp.down_proj.weight[:, 5] = 0
    pruning.prune_attention(LLAMA, m.model.layers[0], [0, 1], [[0], [0]])
    # group 1 keeps head 2 and loses head 3 too: mask it as well
    with torch.no_grad():
        masked.model.layers[0].self_attn.o_proj.weight[:, 48:64] = 0
    pruning.prune_mlp(LLAMA, m.model.layers[0], [i for i in range(128) if i != 5])
    torch.testing.assert_close(_logits(m, ids), _logits(masked, ids), atol=1e-5, rtol=1e-5)
    assert Structure.from_model(m).layers[0] == LayerShape(2, 2, 127)


def test_save_load_roundtrip_non_uniform_with_bias(tiny_llama, tmp_path):
    m = tiny_llama(layers=3, heads=4, kv_heads=2)
    pruning.prune_attention(LLAMA, m.model.layers[0], [1], [[0, 1]])
    pruning.prune_mlp(LLAMA, m.model.layers[1], list(range(0, 128, 2)))
    pruning.add_output_bias(m.model.layers[1].mlp.down_proj, torch.randn(64))
    pruning.drop_layers(m, [0, 1])
    ids = torch.randint(0, 256, (2, 9))
    ref = _logits(m, ids)
    pruning.save_pruned(m, None, tmp_path, recipe={"metric": "test"})
    m2, _ = pruning.load_pruned(tmp_path)
    torch.testing.assert_close(_logits(m2, ids), ref)
    st = Structure.from_model(m2)
    assert st.kept_layers == (0, 1) and st.n_layer_orig == 3
    assert st.layers == (LayerShape(2, 1, 128), LayerShape(4, 2, 64))
