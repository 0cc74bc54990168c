"""HParams: the non-shape hyper-parameters llama.cpp needs (context, RoPE, norms, sliding window)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class HParams:
    """Non-shape hyper-parameters of a GGUF file.

    context_length: tokens; rope_theta: RoPE base; rms_eps: RMS-norm epsilon.
    rope_freqs: llama3-style per-frequency RoPE divisors (written as the `rope_freqs` tensor; () = none).
    rope_linear: linear RoPE scaling factor (1 = none).
    sliding_window: tokens of the local-attention window (0 = none); swa_layers: per layer, True where the
    layer uses the window; rope_theta_swa: RoPE base of those layers (0 = same as rope_theta).
    logit_softcap: final-logit soft-capping (0 = none)."""

    context_length: int = 8192
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    rope_freqs: tuple[float, ...] = ()
    rope_linear: float = 1.0
    sliding_window: int = 0
    swa_layers: tuple[bool, ...] = ()
    rope_theta_swa: float = 0.0
    logit_softcap: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rope_freqs"], d["swa_layers"] = list(self.rope_freqs), list(self.swa_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HParams":
        d = dict(d)
        for k in ("rope_freqs", "swa_layers"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

