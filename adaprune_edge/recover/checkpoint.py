"""The recovery checkpoint: trainable weights, optimizer state, progress and the teacher targets seen so far,
in one file written atomically, so a killed run resumes where its last checkpoint left it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaprune_edge.errors import ConfigError
from adaprune_edge.recover.config import RecoverConfig
from adaprune_edge.runs import atomic_path

FILE = "recover-checkpoint.pt"
# settings that change what the student becomes; the bounds (tokens, minutes) may grow on resume
SAME_ON_RESUME = ("train", "lr", "warmup_steps", "temperature", "ce_weight", "top_k", "lora_rank", "freeze_first",
                  "seq_len", "batch_size", "seed")


class Checkpoint:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, params: list[tuple[str, torch.nn.Parameter]], opt: Any, cfg: RecoverConfig,
             progress: dict[str, Any]) -> None:
        state = {"weights": {n: p.detach().cpu() for n, p in params}, "optimizer": opt.state_dict(),
                 "config": cfg.to_dict(), "shapes": _shapes(params), "progress": progress}
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def load(self, params: list[tuple[str, torch.nn.Parameter]], opt: Any, cfg: RecoverConfig) -> dict[str, Any] | None:
        """Restore weights and optimizer in place and return the progress dict (None: no checkpoint)."""
        if not self.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or foreign file: torch raises several types
            raise ConfigError(f"{self.path} is not a readable recovery checkpoint ({type(e).__name__}); "
                              "delete it or pass --force to start over") from None
        changed = [k for k in SAME_ON_RESUME if state["config"].get(k) != getattr(cfg, k)]
        if changed:
            raise ConfigError(f"{self.path} was trained with other settings ({', '.join(changed)}); use the same "
                              "settings to resume, or --force to start over")
        if state["shapes"] != _shapes(params):
            raise ConfigError(f"{self.path} belongs to another model (its trainable weights differ); "
                              "pass another --out or --force")
        with torch.no_grad():
            for n, p in params:
                p.copy_(state["weights"][n].to(p.device))
        opt.load_state_dict(state["optimizer"])
        return state["progress"]


def _shapes(params: list[tuple[str, torch.nn.Parameter]]) -> list[list[Any]]:
    return [[n, list(p.shape)] for n, p in params]
