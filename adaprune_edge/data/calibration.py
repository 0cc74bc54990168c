"""Calibration data: text sources → a pool of fixed-length token windows → seeded sampling strategies.

Sources are local `.txt` (records = paragraphs), `.jsonl`/`.json` and `.parquet` files read through
`datasets` (offline), `builtin:self` (the default: text sampled from the dense model, selfgen.py),
`builtin:pydoc` (see below), or a hub dataset name when
online. Records are tokenized, joined with "\\n\\n" and cut into consecutive windows of `seq_len`
tokens. `record_range=(a, b)` keeps only that fraction of every source's records (in file order), so a
file can be split into disjoint calibration and evaluation parts (`split_text` does the same for text).

`builtin:pydoc`: the English help topics of Python's own documentation that ship
with every CPython (`pydoc_data.topics`, ~465k characters). Real prose, not synthetic, always offline,
but technical: pass your own text for domain-specific models.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from adaprune_edge.errors import ConfigError, DataError
from adaprune_edge.registry import Registry
from adaprune_edge.data.selfgen import self_text

BUILTIN_DEFAULT = "builtin:self"
BUILTINS = ("self", "pydoc")
TEXT_FIELDS = ("text", "content", "document", "sentence", "query", "question")


# -- reading sources --------------------------------------------------------------------------------
def _builtin_records(name: str, loaded: Any = None, progress: Any = None) -> list[str]:
    if name not in BUILTINS:
        raise DataError(f"unknown built-in calibration source {name!r}; known: {', '.join(BUILTINS)}")
    if name == "self":
        if loaded is None:
            raise ConfigError("builtin:self needs the dense model to sample from")

        return list(self_text(loaded, progress=progress).records)
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _pick_text_column(ds: Any, source: str) -> str:
    cols = list(ds.column_names)
    for name in TEXT_FIELDS:
        if name in cols:
            return name
    for name in cols:
        if ds.features[name].dtype == "string":
            return name
    raise DataError(f"{source}: no text column (looked for {', '.join(TEXT_FIELDS)} or any string column; has {cols})")


def _dataset_records(builder: str, source: str, **kwargs: Any) -> list[str]:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(builder, split="train", **kwargs)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types for unreadable files
        raise DataError(f"cannot read calibration source {source} ({type(e).__name__}: {str(e)[:200]})") from None
    col = _pick_text_column(ds, source)
    return [t for t in ds[col] if isinstance(t, str) and t.strip()]


_SUFFIX_BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".jsonl": "json", ".json": "json",
                    ".parquet": "parquet"}


def _file_records(path: Path) -> list[str]:
    builder = _SUFFIX_BUILDERS.get(path.suffix.lower(), "text")
    extra = {"sample_by": "paragraph"} if builder == "text" else {}
    records = _dataset_records(builder, str(path), data_files=[str(path)], **extra)
    if builder == "text" and len(records) == 1 and records[0].count("\n") > 1:
        # no blank-line paragraphs (wikitext separates them with " \n"): one record per line, so the file
        # can be split into disjoint calibration and held-out parts
        records = [line for line in records[0].splitlines() if line.strip()]
    return records


def _hub_records(name: str) -> list[str]:
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DataError(f"calibration source {name!r} is not a local file and the hub is offline; pass a .txt/.jsonl/.parquet file")
    return _dataset_records(name, name)


def read_records(source: str, loaded: Any = None, progress: Any = None) -> list[str]:
    """Text records of one source: a local file, 'builtin:NAME', or a hub dataset name (online only).
    loaded (a models.LoadedModel) and progress(done, total, note) serve builtin:self only."""
    if source.startswith("builtin:"):
        return _builtin_records(source.split(":", 1)[1], loaded, progress)
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")) or path.suffix.lower() in _SUFFIX_BUILDERS:
        if not path.is_file():
            raise DataError(f"calibration file {source} not found")
        if path.stat().st_size == 0:
            raise DataError(f"calibration file {source} is empty")
        records = _file_records(path)
    else:
        records = _hub_records(source)
    if not records:
        raise DataError(f"calibration source {source} has no text")
    return records


def split_text(text: str, holdout: float) -> tuple[str, str]:
    """Split text at a paragraph boundary: (first 1-holdout share, last holdout share), disjoint."""
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout share must be in (0, 1), got {holdout}")
    cut = int(len(text) * (1.0 - holdout))
    para = text.rfind("\n\n", 0, cut)
    cut = para if para > 0 else cut
    return text[:cut], text[cut:]


def record_slice(records: Sequence[str], record_range: tuple[float, float]) -> list[str]:
    """The `record_range` share of `records` in file order (at least one record)."""
    a, b = record_range
    lo = int(len(records) * a)
    return list(records[lo: max(int(len(records) * b), lo + 1)])


# -- the pool -----------------------------------------------------------------------------------------
@dataclass
class CalibrationPool:
    """Fixed-length token windows [n, seq_len] and, per window, the mean length (tokens) of the records
    it covers (used by `length_stratified`). Model probes (loss, mean hidden state) are cached per window
    index so repeated sampling (one per search trial) pays for each window only once."""

    windows: torch.Tensor
    record_len: torch.Tensor
    sources: tuple[str, ...] = ()
    _probe: dict[int, tuple[float, torch.Tensor]] = field(default_factory=dict, repr=False)
    _views: dict[int, "CalibrationPool"] = field(default_factory=dict, repr=False)

    @property
    def seq_len(self) -> int:
        return int(self.windows.shape[1])

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    @classmethod
    def from_windows(cls, windows: torch.Tensor) -> "CalibrationPool":
        windows = torch.as_tensor(windows, dtype=torch.long)
        if windows.dim() != 2 or windows.shape[0] == 0:
            raise DataError("calibration windows must be a non-empty [n, seq_len] tensor")
        return cls(windows, torch.full((windows.shape[0],), float(windows.shape[1])), ("windows",))

    @classmethod
    def from_records(cls, records: Sequence[str], tokenizer: Any, seq_len: int,
                     sources: tuple[str, ...] = (), min_windows: int = 1) -> "CalibrationPool":
        ids: list[int] = []
        lens: list[int] = []
        for rec in records:
            toks = tokenizer(rec.strip() + "\n\n", add_special_tokens=False)["input_ids"]
            ids.extend(toks)
            lens.extend([len(toks)] * len(toks))
        n = len(ids) // seq_len
        if n < min_windows:
            name = ", ".join(sources) or "calibration text"
            raise DataError(f"{name} has {len(ids)} tokens; {min_windows} window(s) of {seq_len} need "
                            f"{min_windows * seq_len}: pass a longer file")
        win = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
        rl = torch.tensor(lens[: n * seq_len], dtype=torch.float32).view(n, seq_len).mean(dim=1)
        return cls(win, rl, sources)

    @classmethod
    def from_sources(cls, sources: Sequence[str], tokenizer: Any, seq_len: int,
                     record_range: tuple[float, float] = (0.0, 1.0), *, loaded: Any = None,
                     progress: Any = None, min_windows: int = 1) -> "CalibrationPool":
        """Read every source, keep `record_range` of each one's records, tokenize, cut windows
        (DataError naming the sources and the tokens needed if fewer than `min_windows` windows)."""
        a, b = record_range
        if not 0.0 <= a < b <= 1.0:
            raise ConfigError(f"record_range must satisfy 0 <= start < stop <= 1, got {record_range}")
        if seq_len < 2:
            raise ConfigError(f"seq_len must be at least 2, got {seq_len}")
        records: list[str] = []
        for src in sources or [BUILTIN_DEFAULT]:
            recs = read_records(str(src), loaded, progress)
            records.extend(record_slice(recs, record_range))
        names = tuple(str(s) for s in sources or [BUILTIN_DEFAULT])
        return cls.from_records(records, tokenizer, seq_len, names, min_windows)

    def with_seq_len(self, seq_len: int) -> "CalibrationPool":
        """The same token stream cut into windows of `seq_len` (cached, so probes are reused)."""
        if seq_len == self.seq_len:
            return self
        if seq_len not in self._views:
            flat = self.windows.flatten()
            n = flat.numel() // seq_len
            if n < 1:
                raise DataError(f"calibration pool has {flat.numel()} tokens: fewer than one window of {seq_len}")
            rl = self.record_len.repeat_interleave(self.seq_len)[: n * seq_len].view(n, seq_len).mean(dim=1)
            self._views[seq_len] = CalibrationPool(flat[: n * seq_len].view(n, seq_len), rl, self.sources)
        return self._views[seq_len]

    def sample(self, n: int, strategy: str = "random", seed: int = 0, model: Any = None) -> torch.Tensor:
        """`n` window indices chosen by a registered strategy (deterministic for a fixed seed)."""
        fn = STRATEGIES.get(strategy)
        if n < 1:
            raise ConfigError(f"n_samples must be at least 1, got {n}")
        n = min(n, len(self))
        gen = torch.Generator().manual_seed(seed)
        return fn(self, n, gen, model)

    def probe(self, model: Any, indices: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-window mean NLL (nats) and mean last hidden state under `model`, cached by index."""
        todo = [int(i) for i in indices if int(i) not in self._probe]
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            loss, hid = _probe_batch(model, self.windows[idx])
            for j, i in enumerate(idx):
                self._probe[i] = (float(loss[j]), hid[j])
        rows = [self._probe[int(i)] for i in indices]
        return torch.tensor([r[0] for r in rows]), torch.stack([r[1] for r in rows])


@torch.no_grad()
def _probe_batch(model: Any, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(input_ids=batch, use_cache=False, output_hidden_states=True)
    logits = out.logits.float()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                            batch[:, 1:].reshape(-1), reduction="none")
    return nll.view(batch.shape[0], -1).mean(dim=1), out.hidden_states[-1].float().mean(dim=1)


def windows_key(windows: torch.Tensor) -> str:
    """Stable short hash of calibration windows (the importance cache key)."""
    w = windows.to(torch.int64).contiguous()
    return hashlib.sha256(str(tuple(w.shape)).encode() + w.numpy().tobytes()).hexdigest()[:16]


# -- sampling strategies ------------------------------------------------------------------------------
Strategy = Callable[[CalibrationPool, int, torch.Generator, Any], torch.Tensor]
STRATEGIES: Registry[Strategy] = Registry("sampling strategy")


def _candidates(pool: CalibrationPool, n: int, gen: torch.Generator) -> torch.Tensor:
    """A seeded random subset of the pool to probe with the model (4n, at least 64, at most all)."""
    k = min(len(pool), max(4 * n, 64))
    return torch.randperm(len(pool), generator=gen)[:k].sort().values


def _need_model(model: Any, name: str) -> None:
    if model is None:
        raise ConfigError(f"sampling strategy {name!r} needs the dense model to score windows")


@STRATEGIES.register("random")
def sample_random(pool: CalibrationPool, n: int, gen: torch.Generator, model: Any = None) -> torch.Tensor:
    """Uniformly random windows."""
    return torch.randperm(len(pool), generator=gen)[:n].sort().values


@STRATEGIES.register("length_stratified", help="equal numbers per record-length bin")
def sample_length_stratified(pool: CalibrationPool, n: int, gen: torch.Generator, model: Any = None) -> torch.Tensor:
    """Equal numbers of windows from each quantile bin of source-record length (short to long records)."""
    order = torch.argsort(pool.record_len, stable=True)
    bins = torch.tensor_split(order, min(n, len(pool)))
    picks = [b[torch.randint(len(b), (1,), generator=gen)] for b in bins if len(b)]
    return torch.cat(picks)[:n].sort().values


@STRATEGIES.register("hard", help="highest loss under the dense model")
def sample_hard(pool: CalibrationPool, n: int, gen: torch.Generator, model: Any = None) -> torch.Tensor:
    """The highest-loss windows (under the dense model) among a seeded candidate subset."""
    _need_model(model, "hard")
    cand = _candidates(pool, n, gen)
    loss, _ = pool.probe(model, cand)
    return cand[torch.argsort(loss, descending=True, stable=True)[:n]].sort().values


@STRATEGIES.register("diverse", help="hidden-state spread, k-center")
def sample_diverse(pool: CalibrationPool, n: int, gen: torch.Generator, model: Any = None) -> torch.Tensor:
    """Farthest-point (k-center) windows in the dense model's mean-last-hidden-state space."""
    _need_model(model, "diverse")
    cand = _candidates(pool, n, gen)
    _, hid = pool.probe(model, cand)
    hid = torch.nn.functional.normalize(hid, dim=1)
    chosen = [int(torch.randint(len(cand), (1,), generator=gen))]
    dist = torch.full((len(cand),), math.inf)
    while len(chosen) < n:
        dist = torch.minimum(dist, 1.0 - hid @ hid[chosen[-1]])
        dist[chosen] = -1.0
        chosen.append(int(torch.argmax(dist)))
    return cand[torch.tensor(chosen)].sort().values
