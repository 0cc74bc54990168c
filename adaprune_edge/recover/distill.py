"""Recovery after pruning: logit distillation of the pruned student from the dense teacher, bounded in tokens
and minutes, on CUDA when there is one and on CPU threads otherwise (one code path), resumable from its
checkpoint.

One step: a batch of training windows; the teacher's top-k log-probs of each window (computed the first time
the window is seen, then kept: targets.py); the student's forward under bf16 autocast where the hardware has
it; KL at a temperature (+ optional next-token CE); AdamW on what `RecoverConfig.train` names."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from adaprune_edge.archs import adapter_for
from adaprune_edge.data.calibration import windows_key
from adaprune_edge.errors import ConfigError, DataError
from adaprune_edge.recover import lora
from adaprune_edge.recover.checkpoint import Checkpoint
from adaprune_edge.recover.config import RecoverConfig
from adaprune_edge.recover.targets import TeacherTargets, next_token_ce, sparse_kl

Progress = Callable[[int, int, str], None]
GRAD_CLIP = 1.0


@dataclass(frozen=True)
class RecoverResult:
    """What a recovery run did: tokens and steps trained (over all resumed parts), epochs over the text,
    wall seconds of training, KL to the teacher (nats/token, mean of the first and of the last steps)."""

    steps: int
    tokens: int
    epochs: float
    seconds: float
    tokens_per_s: float
    kl_first: float | None
    kl_last: float | None
    curve: tuple[tuple[int, float], ...]  # (tokens, mean KL of the steps since the previous point)
    stopped: str  # "tokens" | "minutes"
    device: str
    bf16: bool
    trainable_params: int
    train_windows: int
    config: dict[str, Any] = field(default_factory=dict)
    resumed_at_step: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["curve"] = [list(p) for p in self.curve]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecoverResult":
        return cls(**{**d, "curve": tuple(tuple(p) for p in d.get("curve", ()))})


def pick_device() -> torch.device:
    """CUDA when torch sees a GPU, else the CPU (its threads: torch.get_num_threads())."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_for(device: torch.device, enabled: bool) -> Callable[[], Any]:
    if not enabled:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# -- what trains ---------------------------------------------------------------------------------------
def _frozen_layers(model: Any, first: int) -> set[int]:
    layers = adapter_for(model).layers(model)
    return {id(p) for layer in list(layers)[:first] for p in layer.parameters()}


def select_trainable(model: Any, cfg: RecoverConfig) -> list[tuple[str, torch.nn.Parameter]]:
    """Mark the parameters `cfg.train` names as trainable (LoRA adapters attached first) and return them."""
    if cfg.train == "lora":
        lora.attach(model, cfg.lora_rank)
    frozen = _frozen_layers(model, cfg.freeze_first)
    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    emb |= {id(p) for p in model.get_output_embeddings().parameters()} if model.get_output_embeddings() else set()
    chosen = []
    for name, p in model.named_parameters():
        if cfg.train == "lora":
            ok = "lora_" in name
        elif cfg.train == "norms":
            ok = "norm" in name or name.endswith(".bias")
        else:
            ok = cfg.train == "all" or id(p) not in emb
        ok = ok and id(p) not in frozen
        p.requires_grad_(ok)
        if ok:
            chosen.append((name, p))
    if not chosen:
        raise ConfigError(f"--train {cfg.train} with --freeze-first {cfg.freeze_first} leaves nothing to train")
    return chosen


# -- the loop ------------------------------------------------------------------------------------------
def _batches(n: int, batch: int, seed: int, step: int) -> list[int]:
    """Window indices of `step`: a seeded permutation per epoch, so a resumed run sees the same order."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch)))
    return perm[k * batch: (k + 1) * batch].tolist()


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100003 + epoch


def _done(cfg: RecoverConfig, tokens: int, seconds: float) -> str | None:
    if cfg.max_tokens and tokens >= cfg.max_tokens:
        return "tokens"
    if cfg.max_minutes and seconds >= cfg.max_minutes * 60:
        return "minutes"
    return None


def _lr(cfg: RecoverConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


def recover(student: Any, teacher: Any, windows: torch.Tensor, cfg: RecoverConfig, workdir: Path | None = None,
            progress: Progress | None = None, device: torch.device | None = None) -> RecoverResult:
    """Distil `student` (modified in place; LoRA merged at the end) from `teacher` on `windows` [n, seq_len]
    until cfg.max_tokens or cfg.max_minutes, on `device` (default: CUDA when present); both models go back to
    the device they came on. With `workdir`, a checkpoint there is resumed and one is written
    every cfg.checkpoint_every steps and at the end (a finished run resumed trains no more)."""
    cfg.validate()
    windows = torch.as_tensor(windows, dtype=torch.long)
    if windows.dim() != 2 or windows.shape[0] == 0:
        raise DataError("recovery needs at least one training window")
    device = device or pick_device()
    home = next(student.parameters()).device, next(teacher.parameters()).device  # restored at the end
    use_bf16 = cfg.bf16 and bf16_supported(device)
    autocast = autocast_for(device, use_bf16)
    student.to(device)
    teacher.to(device).eval()
    params = select_trainable(student, cfg)
    opt = torch.optim.AdamW([p for _, p in params], lr=cfg.lr, weight_decay=0.0)
    batch = min(cfg.batch_size, windows.shape[0])
    ckpt = Checkpoint(Path(workdir)) if workdir is not None else None
    wkey = windows_key(windows)
    st = ckpt.load(params, opt, cfg) if ckpt is not None else None
    st = st or {"step": 0, "tokens": 0, "seconds": 0.0, "curve": [], "kl": [], "targets": None,
                "windows": wkey}
    if st["windows"] != wkey:
        raise ConfigError(f"{ckpt.path} was trained on other text; pass the same --text, or --force to start over")
    targets = TeacherTargets.from_state(st["targets"] or {}, cfg.teacher_key())
    resumed, kl_window, t_start = st["step"], [], time.perf_counter() - st["seconds"]
    student.train()
    while (stop := _done(cfg, st["tokens"], time.perf_counter() - t_start)) is None:
        idx = _batches(windows.shape[0], batch, cfg.seed, st["step"])
        kl = _step(student, teacher, windows, idx, targets, cfg, opt, autocast, device, st["step"])
        st["step"] += 1
        st["tokens"] += len(idx) * windows.shape[1]
        st["kl"].append(kl)
        kl_window.append(kl)
        if progress:
            secs = time.perf_counter() - t_start
            progress(st["tokens"], cfg.max_tokens, f"KL {kl:.3f} · {st['tokens'] / max(secs, 1e-9):.0f} tok/s")
        if ckpt is not None and st["step"] % cfg.checkpoint_every == 0:
            st["curve"].append((st["tokens"], sum(kl_window) / len(kl_window)))
            kl_window = []
            _save(ckpt, params, opt, cfg, st, targets, t_start)
    if kl_window:
        st["curve"].append((st["tokens"], sum(kl_window) / len(kl_window)))
    if ckpt is not None:
        _save(ckpt, params, opt, cfg, st, targets, t_start)
    student.eval()
    if cfg.train == "lora":
        lora.merge(student)
    for p in student.parameters():
        p.requires_grad_(False)
    student.to(home[0])
    teacher.to(home[1])
    return _result(cfg, st, stop, device, use_bf16, params, windows, resumed, time.perf_counter() - t_start)


def _step(student: Any, teacher: Any, windows: torch.Tensor, idx: list[int], targets: TeacherTargets,
          cfg: RecoverConfig, opt: Any, autocast: Callable[[], Any], device: torch.device, step: int) -> float:
    targets.fill(teacher, windows, idx, autocast)
    t_logp, t_ids = targets.batch(idx, device)
    ids = windows[idx].to(device)
    with autocast():
        logits = student(input_ids=ids, use_cache=False).logits
    kl = sparse_kl(logits, t_logp, t_ids, cfg.temperature).mean()
    loss = kl if cfg.ce_weight == 0 else (1 - cfg.ce_weight) * kl + cfg.ce_weight * next_token_ce(logits, ids)
    if not torch.isfinite(loss):
        raise DataError(f"recovery diverged at step {step} (loss {loss.item()}); lower --lr")
    for g in opt.param_groups:
        g["lr"] = _lr(cfg, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], GRAD_CLIP)
    opt.step()
    return float(kl.detach()) / cfg.temperature ** 2


def _save(ckpt: Checkpoint, params: list, opt: Any, cfg: RecoverConfig, st: dict[str, Any],
          targets: TeacherTargets, t_start: float) -> None:
    st["seconds"] = time.perf_counter() - t_start
    st["targets"] = targets.state()
    ckpt.save(params, opt, cfg, st)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _result(cfg: RecoverConfig, st: dict[str, Any], stop: str, device: torch.device, bf16: bool, params: list,
            windows: torch.Tensor, resumed: int, seconds: float) -> RecoverResult:
    k = max(1, min(5, len(st["kl"]) // 4))
    return RecoverResult(steps=st["step"], tokens=st["tokens"], epochs=round(st["tokens"] / windows.numel(), 3),
                         seconds=round(seconds, 1), tokens_per_s=round(st["tokens"] / max(seconds, 1e-9), 1),
                         kl_first=_mean(st["kl"][:k]), kl_last=_mean(st["kl"][-k:]),
                         curve=tuple((int(t), round(float(v), 5)) for t, v in st["curve"]), stopped=stop,
                         device=str(device), bf16=bf16, trainable_params=sum(p.numel() for _, p in params),
                         train_windows=int(windows.shape[0]), config=cfg.to_dict(), resumed_at_step=resumed)


def gap_closed(before: float, after: float, dense: float) -> float:
    """Share of the log-perplexity gap to the dense model that recovery closed (0 = none, 1 = all)."""
    gap = math.log(before) - math.log(dense)
    return (math.log(before) - math.log(after)) / gap if gap > 0 else 0.0
