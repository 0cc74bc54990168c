"""Physical structured pruning: slice attention heads, FFN channels and whole layers out of an HF decoder.

Layers and projections are found and replaced through the model's adapter (by GGUF role), so a family
with another module layout overrides `layers`/`set_layers`/`linear`/`set_linear` in its adapter. Q/K/V
biases (Qwen2) are sliced with their rows; QK-norms (Qwen3, Gemma 3) act per head dimension and are
shared by all heads, so they are never sliced.

Convention shared by every module (export, latency, search): a pruned model keeps its HF class; its
layers hold smaller `nn.Linear`s, so per-layer shapes are read from the modules (`Structure.from_model`). Removed layers are gone from the decoder's layer list; the original
indices of the kept ones are in `model.adaprune_kept_layers`. Bias compensation lives as a bias on
the output projections (attn_output / ffn_down). The HF config is updated where the result is uniform.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from adaprune_edge.archs import ArchAdapter, adapter_for
from adaprune_edge.archs.base import ATTN_K, ATTN_OUT, ATTN_Q, ATTN_V, FFN_DOWN, FFN_GATE, FFN_UP
from adaprune_edge.errors import ModelError
from adaprune_edge.archs.structure import Structure

STRUCTURE_FILE = "structure.json"


def _new_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype,
                    device=weight.device)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _rows(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    return _new_linear(lin.weight[idx], None if lin.bias is None else lin.bias[idx])


def _cols(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    return _new_linear(lin.weight[:, idx], lin.bias)


def _head_rows(head_ids: Sequence[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in head_ids])


def prune_attention(adapter: ArchAdapter, layer: nn.Module, kv_keep: Sequence[int],
                    q_keep: Sequence[Sequence[int]]) -> None:
    """Keep KV heads `kv_keep` and, inside each kept group g, query heads q_keep[i] (offsets within the
    group) of one decoder layer. Every kept group keeps the same number of query heads, so n_head stays a
    multiple of n_head_kv."""
    attn = adapter.attention(layer)
    d = attn.head_dim
    q, k, v, o = (adapter.linear(layer, r) for r in (ATTN_Q, ATTN_K, ATTN_V, ATTN_OUT))
    n_kv = k.out_features // d
    n_rep = (q.out_features // d) // n_kv
    if len(kv_keep) == 0 or len(q_keep) != len(kv_keep) or len({len(q) for q in q_keep}) != 1 or not q_keep[0]:
        raise ValueError("each kept KV group must keep the same, non-zero number of query heads")
    q_heads = [g * n_rep + j for g, offs in zip(kv_keep, q_keep) for j in sorted(offs)]
    kv_rows, q_rows = _head_rows(sorted(kv_keep), d), _head_rows(q_heads, d)
    # keep kv_keep sorted so group i of the result still owns query heads q_keep[i]
    order = sorted(range(len(kv_keep)), key=lambda i: kv_keep[i])
    if order != list(range(len(kv_keep))):
        raise ValueError("kv_keep must be sorted ascending")
    for role, new in ((ATTN_Q, _rows(q, q_rows)), (ATTN_OUT, _cols(o, q_rows)), (ATTN_K, _rows(k, kv_rows)),
                      (ATTN_V, _rows(v, kv_rows))):
        adapter.set_linear(layer, role, new)
    attn.num_key_value_groups = len(q_heads) // len(kv_keep)


def prune_mlp(adapter: ArchAdapter, layer: nn.Module, keep: Sequence[int]) -> None:
    """Keep FFN channels `keep` of one decoder layer (rows of gate/up, columns of down)."""
    if len(keep) == 0:
        raise ValueError("an FFN must keep at least one channel; remove the layer instead")
    idx = torch.as_tensor(sorted(keep), dtype=torch.long)
    gate, up, down = (adapter.linear(layer, r) for r in (FFN_GATE, FFN_UP, FFN_DOWN))
    for role, new in ((FFN_GATE, _rows(gate, idx)), (FFN_UP, _rows(up, idx)), (FFN_DOWN, _cols(down, idx))):
        adapter.set_linear(layer, role, new)
    adapter.mlp(layer).intermediate_size = len(idx)


def add_output_bias(lin: nn.Linear, bias: torch.Tensor) -> None:
    """Add `bias` (bias compensation) to a projection's output, creating the bias if absent."""
    with torch.no_grad():
        if lin.bias is None:
            lin.bias = nn.Parameter(bias.detach().to(lin.weight.dtype).clone())
        else:
            lin.bias.add_(bias.to(lin.bias.dtype))


def drop_layers(model: nn.Module, keep: Sequence[int]) -> None:
    """Keep decoder layers at current positions `keep`; remember their original indices."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    keep = sorted(keep)
    if not keep:
        raise ValueError("at least one decoder layer must be kept")
    orig = list(getattr(model, "adaprune_kept_layers", range(len(layers))))
    model.adaprune_n_layer_orig = getattr(model, "adaprune_n_layer_orig", len(layers))
    adapter.set_layers(model, [layers[i] for i in keep])
    model.adaprune_kept_layers = [orig[i] for i in keep]
    for new_idx, layer in enumerate(adapter.layers(model)):
        adapter.attention(layer).layer_idx = new_idx
    model.config.num_hidden_layers = len(keep)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]


def sync_config(model: nn.Module) -> None:
    """Make the HF config describe the model where its layers are uniform (so HF can rebuild it)."""
    st = Structure.from_model(model)
    cfg = model.config
    cfg.head_dim = st.head_dim
    # HF validates hidden % heads == 0 even with an explicit head_dim; otherwise structure.json rules
    if st.is_uniform and cfg.hidden_size % st.layers[0].n_head == 0:
        s = st.layers[0]
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size = s.n_head, s.n_head_kv, s.n_ff


def apply_structure(model: nn.Module, structure: Structure) -> None:
    """Shrink a dense model to `structure` by keeping the first heads/channels (for skeletons)."""
    drop_layers(model, list(structure.kept_layers))
    adapter = adapter_for(model)
    for layer, s in zip(adapter.layers(model), structure.layers):
        d = adapter.attention(layer).head_dim
        n_kv = adapter.linear(layer, ATTN_K).out_features // d
        n_rep = adapter.linear(layer, ATTN_Q).out_features // d // n_kv
        q_per = s.n_head // s.n_head_kv
        if (s.n_head_kv, q_per) != (n_kv, n_rep):
            prune_attention(adapter, layer, list(range(s.n_head_kv)), [list(range(q_per))] * s.n_head_kv)
        if s.n_ff != adapter.linear(layer, FFN_GATE).out_features:
            prune_mlp(adapter, layer, list(range(s.n_ff)))
    sync_config(model)


def skeleton(config: Any, structure: Structure, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A model with `structure`'s shapes built from a dense HF `config` (weights uninitialised)."""
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(config)
    cfg.num_hidden_layers = structure.n_layer_orig
    if getattr(cfg, "layer_types", None) and len(cfg.layer_types) != structure.n_layer_orig:
        # a pruned config lists the kept layers' types: put them back at their original positions
        types = [cfg.layer_types[0]] * structure.n_layer_orig
        if len(cfg.layer_types) == structure.n_layer:
            for pos, idx in enumerate(structure.kept_layers):
                types[idx] = cfg.layer_types[pos]
        cfg.layer_types = types
    shapes = structure.layers
    kv = max([s.n_head_kv for s in shapes] + [cfg.num_key_value_heads])
    rep = max([s.n_head // s.n_head_kv for s in shapes] + [cfg.num_attention_heads // cfg.num_key_value_heads])
    cfg.num_key_value_heads, cfg.num_attention_heads = kv, kv * rep
    cfg.intermediate_size = max([s.n_ff for s in shapes] + [cfg.intermediate_size])
    cfg.head_dim = structure.head_dim
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    apply_structure(model, structure)
    model = model.to_empty(device="cpu")
    adapter_for(model).restore_buffers(model)
    return model


def _model_extras(model: nn.Module) -> dict[str, Any]:
    n = len(adapter_for(model).layers(model))
    return {"kept_layers": list(getattr(model, "adaprune_kept_layers", range(n)))}


def save_pruned(model: nn.Module, tokenizer: Any, out: Path, recipe: dict[str, Any] | None = None) -> Path:
    """Write config + safetensors + structure.json (+ tokenizer) to `out` (a fresh folder)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sync_config(model)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    meta = {"structure": Structure.from_model(model).to_dict(), "recipe": recipe or {}, **_model_extras(model)}
    (out / STRUCTURE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe a folder written by `save_pruned` records ({} when it has none or is not such a folder)."""
    f = Path(path) / STRUCTURE_FILE
    return json.loads(f.read_text()).get("recipe", {}) if f.is_file() else {}


def load_pruned(path: str | Path) -> tuple[nn.Module, Any]:
    """Load a folder written by `save_pruned` without the original model."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    try:
        meta = json.loads((path / STRUCTURE_FILE).read_text())
        structure = Structure.from_dict(meta["structure"])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ModelError(f"{path / STRUCTURE_FILE} is not a valid adaprune-edge structure file ({e})") from None
    _require_files(path, ("config.json", "model.safetensors"))
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model = skeleton(config, structure)
        state = load_file(str(path / "model.safetensors"))
    except Exception as e:  # transformers and safetensors raise OSError, ValueError, SafetensorError ...
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"cannot load pruned folder {path} ({type(e).__name__}: {msg}); "
                         "write it again with `adaprune-edge prune` or `build --force`") from None
    for name, lin in _biased_linears(state):
        _ensure_bias(model, name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match structure.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True) if (path / "tokenizer_config.json").exists() else None
    return model.eval(), tok


def _require_files(path: Path, names: Sequence[str]) -> None:
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise ModelError(f"pruned folder {path} is missing {', '.join(missing)}; "
                         "write it again with `adaprune-edge prune` or `build --force`")


def _biased_linears(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k[: -len(".bias")], v) for k, v in state.items() if k.endswith(".bias")]


def _ensure_bias(model: nn.Module, name: str) -> None:
    lin = model.get_submodule(name)
    if lin.bias is None:
        lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype))
