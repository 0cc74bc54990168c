"""Teacher targets for sparse distillation: the dense model's top-k log-probs per token, computed once per
training window and kept (in memory and in the checkpoint), so later epochs and resumed runs do not run the
teacher again; and the loss that compares a student with them."""

from __future__ import annotations

from typing import Any, Callable

import torch

LOG_EPS = 1e-9


class TeacherTargets:
    """Top-k teacher log-probs at a temperature: window index → (logp fp32 [T, k], ids int32 [T, k])."""

    def __init__(self, key: dict[str, Any]) -> None:
        self.key = dict(key)
        self.rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def fill(self, teacher: Any, windows: torch.Tensor, indices: list[int], autocast: Callable[[], Any]) -> None:
        """Run the teacher on the windows of `indices` it has not seen yet."""
        todo = [i for i in indices if i not in self.rows]
        if not todo:
            return
        dev = next(teacher.parameters()).device
        with autocast():
            logits = teacher(input_ids=windows[todo].to(dev), use_cache=False).logits
        logp = torch.log_softmax(logits.float() / self.key["temperature"], dim=-1)
        top, ids = logp.topk(self.key["top_k"], dim=-1)
        for j, i in enumerate(todo):
            self.rows[i] = (top[j].to("cpu", torch.float32), ids[j].to("cpu", torch.int32))

    def batch(self, indices: list[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        logp = torch.stack([self.rows[i][0] for i in indices]).to(device, torch.float32)
        ids = torch.stack([self.rows[i][1] for i in indices]).to(device, torch.int64)
        return logp, ids

    def state(self) -> dict[str, Any]:
        idx = sorted(self.rows)
        if not idx:
            return {"key": self.key, "index": [], "logp": None, "ids": None}
        return {"key": self.key, "index": idx, "logp": torch.stack([self.rows[i][0] for i in idx]),
                "ids": torch.stack([self.rows[i][1] for i in idx])}

    @classmethod
    def from_state(cls, state: dict[str, Any], key: dict[str, Any]) -> "TeacherTargets":
        """Targets saved under another key (temperature, k, window length) are dropped, not reused."""
        out = cls(key)
        if state.get("key") == out.key and state.get("index"):
            for j, i in enumerate(state["index"]):
                out.rows[int(i)] = (state["logp"][j], state["ids"][j])
        return out


def sparse_kl(student_logits: torch.Tensor, t_logp: torch.Tensor, t_ids: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """KL(teacher || student) per token (nats) over the teacher's top-k tokens plus one bucket for the
    rest of the vocabulary — exact for that k+1-way partition — times temperature^2. Shape [B, T]."""
    ls = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    lq = ls.gather(-1, t_ids)
    p = t_logp.exp()
    p_rest = (1.0 - p.sum(-1)).clamp_min(0.0)
    q_rest = (1.0 - lq.exp().sum(-1)).clamp_min(LOG_EPS)
    kl = (p * (t_logp - lq)).sum(-1) + p_rest * (torch.log(p_rest.clamp_min(LOG_EPS)) - torch.log(q_rest))
    return kl * temperature ** 2


def next_token_ce(student_logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of the student on its own windows."""
    logits = student_logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
