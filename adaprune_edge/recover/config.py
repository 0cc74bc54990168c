"""RecoverConfig: one distillation run's settings (what trains, the loss, the bounds, the batch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from adaprune_edge.errors import ConfigError

TRAINABLE = ("decoder", "all", "norms", "lora")


@dataclass(frozen=True)
class RecoverConfig:
    """Logit distillation of a pruned student from its dense teacher.

    train: 'decoder' (every decoder weight, norms and biases; the tied embedding/output stays the
    teacher's), 'all' (the embedding too), 'norms' (norm weights and biases only), 'lora' (rank-`lora_rank`
    adapters on every decoder projection, merged back into the weights at the end).
    temperature: KL(teacher || student) at this softmax temperature, scaled by T^2 (Hinton et al.).
    ce_weight: share of next-token cross-entropy in the loss (0 = logits only, as Minitron).
    top_k: teacher log-probs kept per token (sparse KD; the rest of the mass is one bucket, so the loss is
    the exact KL over k+1 outcomes). max_tokens / max_minutes: stop at whichever comes first (0 = no bound
    of that kind). seq_len / batch_size: training windows (tokens) and windows per step."""

    train: str = "decoder"
    lr: float = 1e-4
    warmup_steps: int = 5
    temperature: float = 1.0
    ce_weight: float = 0.0
    top_k: int = 64
    lora_rank: int = 16
    freeze_first: int = 0
    seq_len: int = 256
    batch_size: int = 4
    max_tokens: int = 0
    max_minutes: float = 0.0
    bf16: bool = True  # bf16 autocast where the device supports it (CUDA; CPUs with AVX512-BF16/AMX)
    checkpoint_every: int = 25  # steps
    seed: int = 0

    def validate(self) -> "RecoverConfig":
        if self.train not in TRAINABLE:
            raise ConfigError(f"--train must be one of {', '.join(TRAINABLE)}, got {self.train!r}")
        if self.max_tokens <= 0 and self.max_minutes <= 0:
            raise ConfigError("recovery needs a bound: pass --tokens N and/or --minutes M (> 0) to `recover`, "
                              "--recover-tokens / --recover-minutes to `build`")
        if self.max_tokens < 0 or self.max_minutes < 0:
            raise ConfigError("--recover-tokens and --recover-minutes must not be negative")
        if not 0.0 <= self.ce_weight <= 1.0:
            raise ConfigError(f"--ce-weight must be in [0, 1], got {self.ce_weight}")
        if self.temperature <= 0 or self.lr <= 0:
            raise ConfigError("--temperature and --lr must be positive")
        if self.top_k < 1 or self.lora_rank < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise ConfigError("--top-k, --lora-rank and --batch-size must be at least 1, --seq-len at least 2")
        return self

    def teacher_key(self) -> dict[str, Any]:
        """What the cached teacher targets depend on (not the student's settings)."""
        return {"temperature": self.temperature, "top_k": self.top_k, "seq_len": self.seq_len}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecoverConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
