"""Peak memory of one prune, estimated from the model's shapes before any work is done.

Sequential pruning holds the model, the calibration hidden states (current and next layer) and ONE
layer's statistics: float32 second moments of o_proj / down_proj inputs and the float64 inverse
Hessian work of OBS (H, its Cholesky factor / inverse, W). One-shot pruning holds every layer's
second moments at once and, for gradient metrics, two float32 accumulators per decoder weight plus the
autograd activations of a full forward/backward. Bytes; an estimate, checked by bench/scale.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from adaprune_edge.errors import ConfigError
from adaprune_edge.prune.importance import needs, needs_gram
from adaprune_edge.archs.structure import Structure

GIB = 2**30
OVERHEAD = 0.6 * GIB        # python, torch, transformers and the tokenizer once imported (measured ~0.5 GiB)


@dataclass(frozen=True)
class Footprint:
    """Estimated peak bytes of a prune, by part."""

    model: int
    activations: int
    statistics: int
    gradients: int

    @property
    def total(self) -> int:
        return self.model + self.activations + self.statistics + self.gradients + int(OVERHEAD)

    def describe(self) -> str:
        parts = [("model", self.model), ("activations", self.activations), ("statistics", self.statistics),
                 ("gradients", self.gradients)]
        return ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts if v) + f", runtime {OVERHEAD / GIB:.1f}"


def estimate(st: Structure, vocab: int, config: Any, weight_bytes: int = 4) -> Footprint:
    """Peak bytes of pruning a model of structure `st` (vocabulary `vocab`) with PruneConfig `config`."""
    params = st.params()
    tokens = config.n_samples * config.seq_len
    hidden, n_ff = st.hidden, max(s.n_ff for s in st.layers)
    attn_in = max(s.n_head for s in st.layers) * st.head_dim
    gram = (n_ff * n_ff + attn_in * attn_in) * 4
    obs_work = 3 * n_ff * n_ff * 8 + 2 * hidden * n_ff * 8  # H, L / H⁻¹, copy; W and its update
    batch = config.batch_size * config.seq_len
    layer_act = batch * (4 * hidden + 3 * n_ff) * 4 + batch * config.seq_len * max(s.n_head for s in st.layers) * 4
    grad = needs(config.metric)[0]
    with_gram = needs_gram(config.metric) or config.reconstruction
    obs = obs_work if needs_gram(config.metric) else 0
    if config.sequential:
        acts, stats = 2 * tokens * hidden * 4 + layer_act, gram * with_gram + obs
    else:
        acts = st.n_layer * layer_act + batch * vocab * 4 * (3 if grad else 1)
        stats = st.n_layer * gram * with_gram + obs
    grads = 3 * st.decoder_params() * 4 if grad else 0  # Σg, Σg² and one weight's gradient at a time
    return Footprint(params * weight_bytes, acts, stats, grads)


def check_fits(st: Structure, vocab: int, config: Any, ram_bytes: int) -> Footprint:
    """The estimate, or ConfigError (one line) when it exceeds `ram_bytes`."""
    fp = estimate(st, vocab, config)
    if fp.total <= ram_bytes:
        return fp
    hint = ""
    if not config.sequential:
        seq = estimate(st, vocab, dataclasses.replace(config, sequential=True, metric="obs"))
        if seq.total <= ram_bytes:
            hint = f"; --sequential --metric obs would need ~{seq.total / GIB:.1f} GiB"
    raise ConfigError(f"pruning this model needs ~{fp.total / GIB:.1f} GiB ({fp.describe()} GiB) but "
                      f"{ram_bytes / GIB:.1f} GiB of RAM is available{hint or '; a machine with more RAM, or a smaller model'}")

