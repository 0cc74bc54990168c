"""Tokenizer metadata for a GGUF: copied from a source GGUF, or built from an HF tokenizer with gguf's helpers.

A `TokenizerMeta` is the list of `tokenizer.*` key/values a GGUF needs (tokens, types, merges, special ids,
chat template). It is independent of the weights, so one copy serves every pruned variant of a model."""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUFValueType, GGUFWriter, Keys, TokenType

from adaprune_edge.gguf import keys as gguf_keys
from adaprune_edge.errors import ExportError, ModelError


@dataclass(frozen=True)
class MetaField:
    """One GGUF key/value as GGUFWriter.add_key_value takes it."""

    key: str
    value: Any
    vtype: GGUFValueType
    sub_type: GGUFValueType | None = None


@dataclass(frozen=True)
class TokenizerMeta:
    """The tokenizer.* fields of a GGUF and where they came from ('gguf:<path>' or 'hf:<name>')."""

    fields: tuple[MetaField, ...]
    source: str

    @property
    def n_vocab(self) -> int:
        for f in self.fields:
            if f.key == "tokenizer.ggml.tokens":
                return len(f.value)
        return 0

    @property
    def chat_template(self) -> str | None:
        for f in self.fields:
            if f.key == gguf_keys.CHAT_TEMPLATE:
                return str(f.value)
        return None

    def get(self, key: str, default: Any = None) -> Any:
        return next((f.value for f in self.fields if f.key == key), default)

    def add_to(self, writer: GGUFWriter) -> None:
        for f in self.fields:
            writer.add_key_value(f.key, f.value, f.vtype, f.sub_type)

    def to_dict(self) -> dict[str, Any]:
        """Summary only (the token list is large): source, vocab size, keys."""
        return {"source": self.source, "n_vocab": self.n_vocab, "keys": [f.key for f in self.fields]}


def from_gguf(path: str | Path) -> TokenizerMeta:
    """Copy every tokenizer.* field of an existing GGUF (cached per file path and mtime)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"GGUF file {path} not found")
    return _from_gguf_cached(str(p.resolve()), p.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _from_gguf_cached(path: str, _mtime: int) -> TokenizerMeta:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:
        raise ModelError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from None
    fields = []
    for key, field in reader.fields.items():
        if not key.startswith(gguf_keys.TOKENIZER_PREFIX):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        value = field.contents()
        fields.append(MetaField(key, tuple(value) if isinstance(value, list) else value, vtype, sub))
    meta = TokenizerMeta(tuple(fields), f"gguf:{path}")
    if not meta.n_vocab:
        raise ModelError(f"{path} has no tokenizer.ggml.tokens; cannot copy its tokenizer")
    return meta


def from_hf(tokenizer: Any, n_vocab: int, pre: str = "default") -> TokenizerMeta:
    """Build tokenizer metadata from an HF fast tokenizer with gguf's vocab helpers.

    Supports byte-level BPE (GPT-2 style, `tokenizer.ggml.model = gpt2`) and SentencePiece/Llama HF
    tokenizers. `n_vocab` is the embedding's row count: shorter vocabularies are padded with unused
    tokens. `pre` names llama.cpp's pre-tokenizer; 'default' is llama.cpp's generic GPT-2 split, which
    matches many but not all BPE tokenizers (validation reports HF vs llama.cpp token agreement)."""
    import gguf

    with tempfile.TemporaryDirectory(prefix="adaprune-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        vocab = _hf_vocab(Path(tmp))
        tokens, types = _token_lists(vocab, n_vocab)
        writer = GGUFWriter(path=None, arch="llama")
        writer.add_tokenizer_model(vocab.tokenizer_model)
        if vocab.tokenizer_model == "gpt2":
            writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        if vocab.tokenizer_model == "llama":
            writer.add_token_scores([s for _, s, _ in vocab.all_tokens()][:n_vocab] + [-1000.0] * max(0, n_vocab - len(tokens)))
        gguf.SpecialVocab(tmp, load_merges=vocab.tokenizer_model == "gpt2", n_vocab=n_vocab).add_to_gguf(writer, quiet=True)
    fields = tuple(MetaField(k, v.value, v.type, v.sub_type) for k, v in writer.kv_data[0].items()
                   if k.startswith(gguf_keys.TOKENIZER_PREFIX))
    return TokenizerMeta(fields, f"hf:{getattr(tokenizer, 'name_or_path', '?')}")


def resized(meta: TokenizerMeta, n_vocab: int) -> TokenizerMeta:
    """`meta` with exactly `n_vocab` tokens, for shape-only files of another vocabulary size (only the
    embedding's rows matter there): the last tokens cut, or unused '[PAD<i>]' tokens added as `from_hf` pads;
    merges that would build a cut token and special-token ids past the end are dropped."""
    if meta.n_vocab == n_vocab:
        return meta
    pad = {Keys.Tokenizer.LIST: lambda i: f"[PAD{i}]", Keys.Tokenizer.TOKEN_TYPE: lambda i: int(TokenType.UNUSED),
           Keys.Tokenizer.SCORES: lambda i: -1000.0}  # the per-token arrays
    tokens = set(meta.get(Keys.Tokenizer.LIST)[:n_vocab])
    fields = []
    for f in meta.fields:
        value = f.value
        if f.key in pad:
            value = tuple(value[:n_vocab]) + tuple(pad[f.key](i) for i in range(len(value), n_vocab))
        elif f.key == Keys.Tokenizer.MERGES:
            value = tuple(m for m in value if m.replace(" ", "", 1) in tokens)
        elif f.key.endswith("_token_id") and int(value) >= n_vocab:
            continue
        fields.append(dataclasses.replace(f, value=value))
    return TokenizerMeta(tuple(fields), f"{meta.source} resized to {n_vocab}")


def _hf_vocab(path: Path) -> Any:
    import gguf

    for cls in (gguf.BpeVocab, gguf.LlamaHfVocab):
        try:
            return cls(path)
        except (FileNotFoundError, TypeError, ValueError, ImportError, json.JSONDecodeError):
            continue
    raise ExportError("the HF tokenizer is neither byte-level BPE nor SentencePiece-style; export from a GGUF instead")


def _token_lists(vocab: Any, n_vocab: int) -> tuple[list[bytes], list[int]]:
    tokens, types = [], []
    for text, _score, ttype in vocab.all_tokens():
        tokens.append(text)
        types.append(int(ttype))
    if len(tokens) > n_vocab:
        raise ExportError(f"the tokenizer has {len(tokens)} tokens but the embedding only {n_vocab} rows")
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        types.append(int(TokenType.UNUSED))
    return tokens, types


def for_model(loaded: Any, n_vocab: int) -> TokenizerMeta:
    """Tokenizer metadata for a models.LoadedModel: copied from its GGUF when it came from one."""
    if loaded.spec.kind == "gguf":
        meta = from_gguf(loaded.spec.path)
        if meta.n_vocab != n_vocab:
            raise ExportError(f"source GGUF has {meta.n_vocab} tokens but the model's embedding {n_vocab} rows")
        return meta
    if loaded.tokenizer is None:
        raise ExportError(f"model {loaded.spec.spec} has no tokenizer; cannot write GGUF tokenizer metadata")
    return from_hf(loaded.tokenizer, n_vocab)
