"""Task adapters: lm-eval prompts, upstream formats with their label files, errors that name the field."""

from __future__ import annotations

import json

import pytest

from adaprune_edge.evaluate import tasks
from adaprune_edge.errors import ConfigError, DataError


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_piqa_prompt_and_separate_labels(shared_data):
    data = tasks.load("piqa", shared_data)
    assert len(data.docs) == 1838 and data.source.endswith("piqa/valid.jsonl")
    d = data.docs[0]
    assert d.context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert d.label == 0 and [d.label for d in data.docs[:3]] == [0, 1, 1]  # valid-labels.lst
    assert d.requests()[1] == (d.context, " " + d.choices[1])
    assert d.norm_lengths() == [len(c) for c in d.choices]


def test_arc_answer_keys_numeric_and_letters(shared_data):
    data = tasks.load("arc_challenge", shared_data)
    assert len(data.docs) == 299
    assert {len(d.choices) for d in data.docs} == {3, 4, 5}
    easy = tasks.load("arc_easy", shared_data).docs[0]
    assert easy.context == "Question: Which technology was developed most recently?\nAnswer:"
    assert easy.choices[easy.label] == "cellular telephone"


def test_winogrande_partial_scoring(shared_data):
    d = tasks.load("winogrande", shared_data).docs[0]
    assert d.choices == ("Sarah was a much better surgeon than Maria so Sarah",
                         "Sarah was a much better surgeon than Maria so Maria")
    assert d.requests() == [(d.choices[0], " always got the easier cases."), (d.choices[1], " always got the easier cases.")]
    assert d.label == 1  # dev-labels.lst says 2


def test_boolq_gauntlet_to_lm_eval_prompt(shared_data):
    d = tasks.load("boolq", shared_data).docs[0]
    assert d.context.startswith("All biomass goes through") and "Passage:" not in d.context
    assert d.context.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert d.choices == ("no", "yes") and d.label == 0


def test_openbookqa_uses_stem_only(shared_data):
    d = tasks.load("openbookqa", shared_data).docs[1]
    assert d.context == "There is most likely going to be fog around:" and d.choices[d.label] == "a marsh"


def test_hellaswag_upstream_format_and_preprocess(tmp_path):
    rec = {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.",
           "ctx_b": "then", "ctx": "...", "split": "val", "split_type": "indomain", "label": 3,
           "endings": [", the man adds wax to the windshield and cuts it.", ", a person board a ski lift, while two men supporting the head of the person wearing winter clothes snow as the we girls sled.", ", the man puts on a christmas coat, knitted with netting.", ", the man continues removing the snow on his car. [title] Done"]}
    _jsonl(tmp_path / "hellaswag" / "hellaswag_val.jsonl", [rec])
    d = tasks.load("hellaswag", tmp_path).docs[0]
    assert d.context == ("Removing ice from car: Then, the man writes over the snow covering the window of a car, "
                         "and a woman wearing winter clothes smiles. Then")
    assert d.choices[3] == ", the man continues removing the snow on his car.. Done" and d.label == 3


def test_hellaswag_missing_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"hellaswag/hellaswag_val\.jsonl not found.*offline"):
        tasks.load("hellaswag", tmp_path)


def test_missing_field_names_file_line_and_field(tmp_path):
    _jsonl(tmp_path / "arc" / "ARC-Easy-Dev.jsonl", [{"question": {"stem": "q?", "choices": [{"text": "a", "label": "A"}]}}])
    with pytest.raises(DataError, match=r"ARC-Easy-Dev\.jsonl:1: missing field 'answerKey'"):
        tasks.load("arc_easy", tmp_path)


def test_piqa_without_label_file_says_so(tmp_path):
    _jsonl(tmp_path / "piqa" / "valid.jsonl", [{"goal": "g", "sol1": "a", "sol2": "b"}])
    with pytest.raises(DataError, match=r"valid-labels\.lst not found"):
        tasks.load("piqa", tmp_path)


def test_unknown_task_lists_known():
    with pytest.raises(ConfigError, match=r"unknown task 'piqaa' \(did you mean 'piqa'\?\); known: arc_challenge, arc_easy, boolq"):
        tasks.parse_names("piqaa,arc_easy")


def test_subset_fixed_seeded_and_limit_zero_rejected(shared_data):
    docs = tasks.load("arc_easy", shared_data).docs
    a, b, c = tasks.subset(docs, 50, 1), tasks.subset(docs, 50, 1), tasks.subset(docs, 50, 2)
    assert a == b and a != c and len(a) == 50
    assert [docs.index(x) for x in a] == sorted(docs.index(x) for x in a)
    assert len(tasks.subset(docs, 10_000, 1)) == len(docs)
    with pytest.raises(ConfigError, match="--limit must be at least 1"):
        tasks.subset(docs, 0, 1)
