"""Export a (pruned) model as an HF folder: standard `AutoModelForCausalLM` layout when the structure is
uniform, otherwise safetensors + structure.json that only adaprune-edge's loader (models.load) reads."""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaprune_edge.archs import adapter_for, slicing as pruning
from adaprune_edge.errors import ExportError
from adaprune_edge.runs import check_writable
from adaprune_edge.archs.structure import Structure


@dataclass(frozen=True)
class HFExport:
    """A written folder; `layout` is 'hf' (AutoModelForCausalLM loads it) or 'adaprune' (models.load)."""

    path: str
    layout: str
    structure: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def standard_layout_ok(model: Any) -> bool:
    """True when HF's LlamaConfig can describe the model: uniform layers, hidden divisible by heads,
    no bias compensation (HF Llama has one attention_bias flag for q/k/v/o together), and a family whose
    pruned modules transformers loads back (archs: `saves_as_hf`)."""
    st = Structure.from_model(model)
    has_bias = any(n.endswith(".bias") for n, _ in model.named_parameters())
    return (st.is_uniform and st.hidden % st.layers[0].n_head == 0 and not has_bias
            and adapter_for(model).saves_as_hf)


def save(model: Any, tokenizer: Any, out: str | Path, recipe: dict[str, Any] | None = None,
         force: bool = False) -> HFExport:
    """Write the folder atomically (temp folder, then rename)."""
    out = Path(out)
    check_writable(out, force)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        layout = _write(model, tokenizer, tmp, recipe)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as e:
        raise ExportError(f"cannot write {out} ({e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return HFExport(str(out), layout, Structure.from_model(model).to_dict())


def _write(model: Any, tokenizer: Any, tmp: Path, recipe: dict[str, Any] | None) -> str:
    if not standard_layout_ok(model):
        pruning.save_pruned(model, tokenizer, tmp, recipe)
        return "adaprune"
    pruning.sync_config(model)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    return "hf"
