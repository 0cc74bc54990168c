"""The allocation's file: `<gguf stem>.quant.json` next to the GGUF (and in report.json), the one input
`export --quant-file FILE` needs to write the same file again. Loading registers the allocation, so its
recipe name (`Q4_0:alloc=6346d134:imatrix`) parses anywhere in the process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaprune_edge.errors import ConfigError
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.runs import write_json

FORMAT = "adaprune-edge/quant-allocation/1"


def path_for(gguf: Path) -> Path:
    return Path(gguf).with_suffix(".quant.json")


def to_dict(recipe: QuantRecipe, **context: Any) -> dict[str, Any]:
    """The recipe file's content: name, flags, every tensor's type, plus `context` (device, budget,
    predicted figures)."""
    return {"format": FORMAT, "recipe": recipe.name, "imatrix": recipe.imatrix, "tensors": dict(recipe.assign),
            **context}


def save(path: Path, recipe: QuantRecipe, **context: Any) -> Path:
    write_json(Path(path), to_dict(recipe, **context))
    return Path(path)


def from_dict(d: dict[str, Any], source: str = "recipe") -> QuantRecipe:
    """The registered recipe of a recipe file's content (ConfigError if it is not one, or was edited
    without its name: the digest in the name must match the tensors)."""
    if d.get("format") != FORMAT or not isinstance(d.get("tensors"), dict):
        raise ConfigError(f"{source} is not an adaprune-edge quant allocation (format {FORMAT})")
    r = QuantRecipe.allocated(d["tensors"], bool(d.get("imatrix", True)))
    if d.get("recipe") not in (None, r.name):
        raise ConfigError(f"{source}: its tensors hash to {r.name}, its name says {d['recipe']}; fix or regenerate it")
    return r


def load(path: Path) -> QuantRecipe:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read quant file {path}: {e}") from None
    return from_dict(d, str(path))


def load_all(folder: Path) -> list[QuantRecipe]:
    """Register every recipe file in `folder` (a resumed build's allocations)."""
    return [load(p) for p in sorted(Path(folder).glob("*.quant.json"))]


def check_matches(recipe: QuantRecipe, structure: Any) -> None:
    """ConfigError unless the allocation names exactly `structure`'s weight tensors."""
    names = {t.name for t in structure.tensors()}
    have = {n for n, _ in recipe.assign}
    if names != have:
        extra, missing = sorted(have - names)[:3], sorted(names - have)[:3]
        raise ConfigError(f"the quant file's allocation does not match this model (tensors not in the model: {extra}, "
                          f"missing: {missing}); allocate again for this model")
