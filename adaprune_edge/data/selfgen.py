"""`builtin:self`: calibration text sampled from the dense model itself, cached per model.

Why: without the training data, text the model generates is faithful to its own domain (chat models
answer chat prompts), while a fixed corpus like Python's docs tunes the pruned model to that corpus
(Williams & Aletras, ACL 2024; "Beware of Calibration Data for Pruning LLMs", ICLR 2025).

Half the samples answer short generic user prompts through the model's chat template, half continue
short generic openings as plain text (all plain when the model has no chat template; said through the
progress callback). Samples that repeat themselves (distinct 4-gram share below `min_distinct`) or
duplicate an earlier sample are dropped. The result is cached in models.cache_dir()/selfgen, keyed by the
model's identity, the generation settings and the seed: the second call does not generate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from adaprune_edge.errors import DataError
from adaprune_edge.data.samplers import Sampling, llama_cpp_generate, torch_generate
from adaprune_edge.models import _file_key
from adaprune_edge.models import cache_dir
from adaprune_edge.runs import write_json

Progress = Callable[[int, int, str], None]
CACHE_VERSION = 1
CHAT_PROMPTS = (
    "Tell me about your favourite book.", "Explain how a rainbow forms.", "Write a short story about a lighthouse keeper.",
    "What are some tips for learning a new language?", "How does the stock market work?", "Describe a typical day of a nurse.",
    "Write a poem about autumn.", "What is the difference between weather and climate?", "Give me a recipe for a simple soup.",
    "Summarize the history of the Roman Empire.", "How do I write a good cover letter?", "Why is exercise important?",
    "Explain photosynthesis to a child.", "Write an email asking a colleague for help.", "What should I pack for a hiking trip?",
    "How do vaccines work?", "Compare cats and dogs as pets.", "Write a dialogue between two friends planning a trip.",
    "What causes earthquakes?", "Give advice to someone starting their first job.", "How does the internet work?",
    "Describe the city of Paris.", "Write a product review for a pair of headphones.", "Explain what a neural network is.",
)
PLAIN_PROMPTS = (
    "The", "In 1998,", "Once upon a time", "The following article", "Dear", "According to",
    "Scientists have", "The history of", "When I was", "Here is", "In this guide,", "A new study", "It was", "Many people",
)


@dataclass(frozen=True)
class SelfGenConfig:
    """What to generate: about `n_tokens` tokens in samples of at most `sampling.max_new_tokens`.

    threads: llama.cpp threads. 1 by default: on this shared 2-core host llama.cpp with 2 threads fell
    to 3 tok/s when other processes used the CPU (spinning threads), 1 thread kept 56 tok/s."""

    n_tokens: int = 20480
    sampling: Sampling = Sampling()
    min_new_tokens: int = 32
    min_distinct: float = 0.5
    min_letters: float = 0.5
    chat_share: float = 0.5
    seed: int = 0
    n_parallel: int = 8
    threads: int = 1

    def key_fields(self) -> dict[str, Any]:
        """What the samples depend on (threads / n_parallel only change speed)."""
        d = asdict(self)
        d.pop("threads")
        d.pop("n_parallel")
        return {**d, "version": CACHE_VERSION}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SelfGenConfig":
        d = dict(d)
        d["sampling"] = Sampling(**d.get("sampling", {}))
        return cls(**d)


@dataclass(frozen=True)
class SelfText:
    """Generated records and how they were made."""

    records: tuple[str, ...]
    tokens: int
    backend: str
    chat: bool
    rejected: dict[str, int]
    seconds: float
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "records": list(self.records)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SelfText":
        return cls(**{**d, "records": tuple(d["records"])})


# -- identity and cache -------------------------------------------------------------------------------
def model_identity(loaded: Any) -> str:
    """The weights' content key (the GGUF, or a folder's weight/config files; not the path, so a copied
    model hits the cache), a hub id, or (in-memory models) a hash of the parameters."""

    spec = getattr(loaded, "spec", None)
    path = Path(spec.path) if spec is not None and spec.kind != "hub" else None
    if path is not None and path.is_file():
        return f"file:{_file_key(path)}"
    if path is not None and path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
        return "dir:" + ",".join(f"{p.name}={_file_key(p)}" for p in files)
    if spec is not None and spec.kind == "hub":
        return f"hub:{spec.path}"
    h = hashlib.sha256()
    for name, t in sorted(loaded.model.state_dict().items()):
        h.update(name.encode() + t.detach().float().contiguous().numpy().tobytes()[:4096])
    return "memory:" + h.hexdigest()[:16]


def cache_path(loaded: Any, cfg: SelfGenConfig) -> Path:

    key = json.dumps({"model": model_identity(loaded), **cfg.key_fields()}, sort_keys=True, default=str)
    return cache_dir() / "selfgen" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def self_text(loaded: Any, cfg: SelfGenConfig = SelfGenConfig(), progress: Progress | None = None) -> SelfText:
    """The model's own text (cached; generated on the first call, llama.cpp for a GGUF, torch otherwise)."""

    path = cache_path(loaded, cfg)
    if path.is_file():
        try:
            return SelfText.from_dict({**json.loads(path.read_text(encoding="utf-8")), "cached": True})
        except (ValueError, KeyError, TypeError):
            pass  # a torn or old cache file is regenerated, never trusted
    out = generate(loaded, cfg, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, out.to_dict())
    return out


# -- generation ---------------------------------------------------------------------------------------
def chat_prefix(tokenizer: Any, prompt: str) -> str | None:
    """The chat-templated user turn, or None when the tokenizer has no (working) chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # jinja/template errors of arbitrary types: fall back to plain continuation
        return None


def prompt_texts(tokenizer: Any, n: int, chat_share: float) -> tuple[list[str], bool]:
    """n prompt strings (chat-templated and plain interleaved), and whether the chat template worked."""
    chat = chat_prefix(tokenizer, CHAT_PROMPTS[0]) is not None
    every = round(1 / chat_share) if chat and chat_share > 0 else 0
    out = []
    for j in range(n):
        if every and j % every == 0:
            out.append(chat_prefix(tokenizer, CHAT_PROMPTS[(j // every) % len(CHAT_PROMPTS)]) or "")
        else:
            out.append(PLAIN_PROMPTS[j % len(PLAIN_PROMPTS)])
    return out, chat


def distinct_ngram_share(ids: list[int], n: int = 4) -> float:
    """Distinct n-grams / all n-grams (1.0 = no repeats; looping text falls towards 0)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def generate(loaded: Any, cfg: SelfGenConfig, progress: Progress | None = None) -> SelfText:
    """Sample until the kept samples hold `cfg.n_tokens` tokens (prompt text included in each record)."""
    import time

    tok = loaded.tokenizer
    n_jobs = 4 * cfg.n_tokens // cfg.min_new_tokens + 1  # upper bound; generation stops once enough
    texts, chat = prompt_texts(tok, n_jobs, cfg.chat_share)
    if progress and not chat:
        progress(0, 0, "model has no chat template: plain continuation only")
    # chat text already holds its special tokens; plain openings get a BOS only if the tokenizer adds one
    prompts = [tok(t, add_special_tokens=not t.startswith(tuple(tok.all_special_tokens)))["input_ids"] for t in texts]
    stop = set(tok.all_special_ids)  # end of turn / document: a record never spans special tokens
    kept: dict[int, str] = {}
    rejected = {"short": 0, "repetitive": 0, "not prose": 0, "duplicate": 0}
    seen: set[str] = set()
    counted: set[int] = set()
    total = [0]

    def enough(results: list) -> bool:  # filter finished samples as they arrive, in prompt order
        for j, ids in enumerate(results):
            if ids is None or j in counted:
                continue
            counted.add(j)
            why = _reject(ids, cfg, tok, seen)
            if why:
                rejected[why] += 1
            else:
                kept[j] = texts[j] + tok.decode(ids)
                total[0] += len(ids) + len(prompts[j])
        return total[0] >= cfg.n_tokens

    t0 = time.perf_counter()
    gguf = loaded.spec.path if getattr(loaded, "spec", None) is not None and loaded.spec.kind == "gguf" else None
    step = (lambda d, t, note: progress(min(total[0], cfg.n_tokens), cfg.n_tokens, note)) if progress else None
    if gguf:
        results = llama_cpp_generate(gguf, prompts, cfg.sampling, cfg.seed, stop, n_parallel=cfg.n_parallel,
                                     threads=cfg.threads, enough=enough, progress=step)
    else:
        results = torch_generate(loaded.model, prompts, cfg.sampling, cfg.seed, stop, enough=enough, progress=step)
    enough(results)
    if not kept:
        raise DataError(f"self-generation produced no usable text ({rejected}); pass --calib FILE instead")
    records = tuple(kept[j] for j in sorted(kept))
    return SelfText(records, total[0], "llama.cpp" if gguf else "torch", chat, rejected, time.perf_counter() - t0)


def _reject(ids: list[int], cfg: SelfGenConfig, tok: Any, seen: set[str]) -> str | None:
    if len(ids) < cfg.min_new_tokens:
        return "short"
    if distinct_ngram_share(ids) < cfg.min_distinct:
        return "repetitive"
    text = tok.decode(ids)
    if sum(c.isalpha() for c in text) < cfg.min_letters * len(text):  # number lists, tables, code dumps
        return "not prose"
    head = tok.decode(ids[:24]).strip().lower()  # same opening = same sample for calibration purposes
    if head in seen:
        return "duplicate"
    seen.add(head)
    return None
