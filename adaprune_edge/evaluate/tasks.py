"""Zero-shot multiple-choice tasks: adapters from upstream records to (context, choices, label).

Prompts follow lm-evaluation-harness's task configs exactly (so numbers are comparable with published
tables): the continuation is " " + choice, and WinoGrande uses partial scoring (one context per option,
the shared rest of the sentence is the scored continuation). Records come from local files in their
upstream formats (a folder given with --data-dir) or, when online, from the hub dataset lm-eval uses.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from adaprune_edge.errors import ConfigError, DataError
from adaprune_edge.registry import Registry


@dataclass(frozen=True)
class Doc:
    """One multiple-choice item.

    Normal tasks: every choice is scored as " " + choice after `context`. Partial scoring (WinoGrande):
    `partial_target` is set, each choice is a context of its own and " " + partial_target is scored."""

    context: str
    choices: tuple[str, ...]
    label: int
    partial_target: str | None = None

    def requests(self) -> list[tuple[str, str]]:
        """(context, continuation) strings, one per choice, with lm-eval's " " target delimiter."""
        if self.partial_target is None:
            return [(self.context, " " + c) for c in self.choices]
        return [(c, " " + self.partial_target) for c in self.choices]

    def norm_lengths(self) -> list[int]:
        """Characters used by acc_norm: len(choice) (lm-eval's completion_len), the target when partial."""
        if self.partial_target is None:
            return [len(c) for c in self.choices]
        return [len(self.partial_target)] * len(self.choices)


@dataclass(frozen=True)
class HubSource:
    """The hub dataset lm-eval uses for a task (only read when online)."""

    path: str
    name: str | None
    split: str


@dataclass(frozen=True)
class TaskSpec:
    """A task: where its local file lives under --data-dir, its labels, its hub twin, its adapter."""

    name: str
    files: tuple[str, ...]                    # candidates relative to the data dir, first found wins
    adapter: Callable[[dict[str, Any]], Doc]  # record (with "label" merged in from a .lst) -> Doc
    hub: HubSource
    labels_file: str | None = None            # upstream label list next to the jsonl ("-labels.lst")
    label_field: str = "label"                # in-record field that can stand in for the label list
    has_acc_norm: bool = True

    def label_path(self, data_file: Path) -> Path | None:
        return data_file.with_name(self.labels_file) if self.labels_file else None


TASKS: Registry[TaskSpec] = Registry("task")


class _Record:
    """Field access that names the file, line and missing field in the error."""

    def __init__(self, rec: dict[str, Any], where: str) -> None:
        self.rec, self.where = rec, where

    def __getitem__(self, key: str) -> Any:
        if not isinstance(self.rec, dict) or key not in self.rec:
            raise DataError(f"{self.where}: missing field {key!r}")
        return self.rec[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.rec.get(key, default) if isinstance(self.rec, dict) else default


def _label_index(labels: Sequence[str], key: Any, where: str) -> int:
    key = str(key).strip()
    if key not in labels:
        raise DataError(f"{where}: answer {key!r} is not one of the choice labels {list(labels)}")
    return list(labels).index(key)


def _question_and_choices(r: _Record, stem_key: str) -> tuple[str, list[str], list[str]]:
    """ARC/OpenBookQA: upstream {"question": {"stem", "choices": [{text,label}]}} or the hub's flat columns."""
    q = r.get("question")
    if isinstance(q, dict):
        qr = _Record(q, r.where + " question")
        choices = [_Record(c, r.where + " choice") for c in qr["choices"]]
        return qr["stem"], [c["text"] for c in choices], [c["label"] for c in choices]
    ch = _Record(r["choices"], r.where + " choices")
    return r[stem_key], list(ch["text"]), list(ch["label"])


def _arc(r: _Record) -> Doc:
    question, texts, labels = _question_and_choices(r, "question")
    return Doc(f"Question: {question}\nAnswer:", tuple(texts), _label_index(labels, r["answerKey"], r.where))


def _openbookqa(r: _Record) -> Doc:
    question, texts, labels = _question_and_choices(r, "question_stem")
    return Doc(question, tuple(texts), _label_index(labels, r["answerKey"], r.where))


def _piqa(r: _Record) -> Doc:
    return Doc(f"Question: {r['goal']}\nAnswer:", (r["sol1"], r["sol2"]), int(r["label"]))


def _boolq(r: _Record) -> Doc:
    """lm-eval: "{passage}\\nQuestion: {question}?\\nAnswer:" with choices no/yes. Accepts the hub columns
    (passage, question, label) and the MosaicML gauntlet file (query "Passage: …\\nQuestion: …?", gold)."""
    if "query" not in r.rec:
        return Doc(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ("no", "yes"), int(r["label"]))
    query = str(r["query"])
    passage, sep, question = query.rpartition("\nQuestion: ")
    if not sep:
        raise DataError(f"{r.where}: field 'query' has no '\\nQuestion: ' part")
    passage = passage.removeprefix("Passage: ")
    question = question.strip()
    question = question if question.endswith("?") else question + "?"
    choices = tuple(r.get("choices") or ("no", "yes"))
    return Doc(f"{passage}\nQuestion: {question}\nAnswer:", choices, int(r["gold"]))


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(r: _Record) -> Doc:
    ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
    query = _hellaswag_clean(r["activity_label"] + ": " + ctx)
    return Doc(query, tuple(_hellaswag_clean(e) for e in r["endings"]), int(r["label"]))


def _winogrande(r: _Record) -> Doc:
    sentence = r["sentence"]
    cut = sentence.find("_")
    if cut < 0:
        raise DataError(f"{r.where}: field 'sentence' has no '_' blank")
    answer = str(r["label"] if "label" in r.rec else r["answer"]).strip()
    if answer not in ("1", "2"):
        raise DataError(f"{r.where}: answer {answer!r} is not 1 or 2")
    contexts = (sentence[:cut] + r["option1"], sentence[:cut] + r["option2"])
    return Doc("", contexts, int(answer) - 1, partial_target=sentence[cut + 1:].strip())


def _register(spec: TaskSpec) -> None:
    TASKS.register(spec.name)(spec)


for _spec in (
    TaskSpec("piqa", ("piqa/valid.jsonl",), _piqa, HubSource("baber/piqa", None, "validation"),
             labels_file="valid-labels.lst"),
    TaskSpec("arc_easy", ("arc/ARC-Easy-Dev.jsonl",), _arc, HubSource("allenai/ai2_arc", "ARC-Easy", "validation")),
    TaskSpec("arc_challenge", ("arc/ARC-Challenge-Dev.jsonl",), _arc,
             HubSource("allenai/ai2_arc", "ARC-Challenge", "validation")),
    TaskSpec("openbookqa", ("openbookqa/test.jsonl",), _openbookqa, HubSource("allenai/openbookqa", "main", "test")),
    TaskSpec("boolq", ("boolq/dev.jsonl",), _boolq, HubSource("aps/super_glue", "boolq", "validation")),
    TaskSpec("hellaswag", ("hellaswag/hellaswag_val.jsonl", "hellaswag/valid.jsonl"), _hellaswag,
             HubSource("Rowan/hellaswag", None, "validation")),
    TaskSpec("winogrande", ("winogrande/dev.jsonl",), _winogrande,
             HubSource("allenai/winogrande", "winogrande_xl", "validation"), labels_file="dev-labels.lst",
             label_field="answer", has_acc_norm=False),
):
    _register(_spec)


@dataclass(frozen=True)
class TaskData:
    """The docs of one task and where they came from (a file path or hub id)."""

    task: str
    source: str
    docs: tuple[Doc, ...]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    if not out:
        raise DataError(f"task file {path} is empty")
    return out


def _read_labels(path: Path, n: int) -> list[str]:
    if not path.is_file():
        raise DataError(f"label file {path} not found (the upstream labels live next to the jsonl)")
    labels = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if len(labels) != n:
        raise DataError(f"label file {path} has {len(labels)} labels for {n} records")
    return labels


def find_file(spec: TaskSpec, data_dir: str | Path) -> Path | None:
    """The task's local file under data_dir (also accepted directly inside it), or None."""
    root = Path(data_dir)
    for rel in spec.files:
        for cand in (root / rel, root / Path(rel).name):
            if cand.is_file():
                return cand
    return None


def load_file(spec: TaskSpec, path: Path) -> TaskData:
    """Read an upstream-format jsonl (plus its .lst labels when the task has them) into docs."""
    records = _read_jsonl(path)
    lpath = spec.label_path(path)
    labels = None
    if lpath is not None and (lpath.is_file() or not isinstance(records[0], dict)
                              or spec.label_field not in records[0]):
        labels = _read_labels(lpath, len(records))
    docs = []
    for i, rec in enumerate(records):
        if labels is not None and isinstance(rec, dict):
            rec = {**rec, "label": labels[i]}
        docs.append(spec.adapter(_Record(rec, f"{path}:{i + 1}")))
    return TaskData(spec.name, str(path), tuple(docs))


def _offline() -> bool:
    return os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


def load_hub(spec: TaskSpec, missing: str) -> TaskData:
    """Load the task's hub dataset (online only); `missing` names the local file that was not found."""
    hub = spec.hub
    try:
        import datasets

        ds = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    except Exception as e:
        raise DataError(f"task {spec.name}: {missing} and hub dataset {hub.path} could not be loaded "
                        f"({type(e).__name__}); pass --data-dir DIR containing {spec.files[0]}") from None
    where = f"{hub.path}[{hub.split}]"
    docs = tuple(spec.adapter(_Record(dict(rec), f"{where} row {i}")) for i, rec in enumerate(ds))
    return TaskData(spec.name, f"hub:{hub.path}" + (f"/{hub.name}" if hub.name else ""), docs)


def load(name: str, data_dir: str | Path | None = None) -> TaskData:
    """Docs of task `name`: the local file under data_dir if present, else the hub dataset when online."""
    spec = TASKS.get(name)
    missing = "no --data-dir given"
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"data dir {data_dir} not found")
        path = find_file(spec, data_dir)
        if path is not None:
            return load_file(spec, path)
        missing = f"file {Path(data_dir) / spec.files[0]} not found"
    if _offline():
        raise DataError(f"task {name}: {missing}, and the hub dataset {spec.hub.path} cannot be fetched "
                        f"offline; pass --data-dir DIR containing {spec.files[0]}")
    return load_hub(spec, missing)


def subset(docs: Sequence[Doc], limit: int | None, seed: int) -> list[Doc]:
    """A fixed seeded subset of `limit` docs (in file order); all docs when limit is None or ≥ len."""
    if limit is None:
        return list(docs)
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1 (got {limit})")
    if limit >= len(docs):
        return list(docs)
    keep = sorted(random.Random(seed).sample(range(len(docs)), limit))
    return [docs[i] for i in keep]


def parse_names(text: str) -> list[str]:
    """'piqa, arc_easy' -> validated names (unknown -> ConfigError listing the known tasks)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"no task given; known: {', '.join(TASKS.names())}")
    for n in names:
        TASKS.get(n)
    return list(dict.fromkeys(names))
