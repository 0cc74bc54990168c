"""Multiple-choice scoring (hand-checked on a tiny model), batching, KL/top-1, and torch vs GGUF parity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from adaprune_edge.evaluate import harness
from adaprune_edge.evaluate import tasks
from adaprune_edge.evaluate.divergence import evaluate_windows, kl_per_token
from adaprune_edge.evaluate.perplexity import perplexity

CORPUS = ["Question: Which is the largest planet?\nAnswer: Jupiter is the largest planet.",
          "The cat sat on the mat and the dog slept by the door.",
          "Water boils at one hundred degrees. Ice melts in the sun."] * 20


def tiny_tokenizer():
    """A byte-level BPE trained in memory (offline), wrapped as an HF fast tokenizer without BOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         special_tokens=["<pad>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


ARC_RECORDS = [  # choices of very different lengths, so acc and acc_norm can disagree
    ("Which is the largest planet?", ["Jupiter", "Mars is the largest planet of all the planets", "Venus"]),
    ("What does the cat do?", ["sat on the mat", "it", "slept by the door and the dog sat"]),
    ("Where does ice melt?", ["in the sun", "at one hundred degrees in water that boils", "no", "the mat"]),
    ("What boils?", ["Water", "The cat sat on the mat and the dog slept"]),
]


def _write_arc(root, labels):
    path = root / "arc" / "ARC-Easy-Dev.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"question": {"stem": q, "choices": [{"text": t, "label": "ABCD"[i]} for i, t in enumerate(ch)]},
             "answerKey": "ABCD"[lab]} for (q, ch), lab in zip(ARC_RECORDS, labels)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@torch.no_grad()
def _hand_loglik(model, tok, context: str, choice: str) -> float:
    """Independent: run the whole string once, sum log p of the tokens after the context's tokens."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + " " + choice, add_special_tokens=False)["input_ids"]
    logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), dim=-1)
    return sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole)))


def test_acc_and_acc_norm_match_hand_computation(tiny_llama, tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), seed=3)
    lls = [[_hand_loglik(model, tok, f"Question: {q}\nAnswer:", c) for c in ch] for q, ch in ARC_RECORDS]
    raw = [int(np.argmax(ll)) for ll in lls]
    norm = [int(np.argmax(np.array(ll) / [len(c) for c in ch])) for ll, (_, ch) in zip(lls, ARC_RECORDS)]
    # gold chosen so that acc and acc_norm are known by hand: doc 0 neither pick, the rest the raw pick
    labels = [next(i for i in range(3) if i not in (raw[0], norm[0]))] + raw[1:]
    _write_arc(tmp_path, labels)
    acc = sum(r == g for r, g in zip(raw, labels)) / 4
    acc_norm = sum(n == g for n, g in zip(norm, labels)) / 4
    assert acc == 0.75 and acc_norm < acc  # the records are built so normalisation changes a choice

    data = tasks.load("arc_easy", tmp_path)
    scorer = harness.TorchScorer(model, tok, batch_size=3)
    torch.testing.assert_close(harness.score(scorer, data.docs), lls, rtol=0, atol=1e-4)
    res = harness.evaluate_task(scorer, data)
    assert (res.n, res.acc, res.acc_norm) == (4, acc, acc_norm)
    assert res.acc_stderr == pytest.approx(math.sqrt(acc * (1 - acc) / 3))
    assert res.acc_norm_stderr == pytest.approx(math.sqrt(acc_norm * (1 - acc_norm) / 3))


def test_encode_pair_moves_trailing_space_and_splits_whole():
    enc = {"Answer:": [1], "Answer: yes": [1, 7], "ab": [5], "abc": [9]}  # "abc" merges across the boundary
    assert harness.encode_pair(lambda s: enc[s], "Answer: ", "yes") == ([1], [7])
    assert harness.encode_pair(lambda s: enc[s], "ab", "c") == ([5], [])  # lm-eval: whole[len(ctx):]


def test_batched_equals_unbatched(tiny_llama):
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), seed=1)
    pairs = [harness.encode_pair(lambda s: tok(s, add_special_tokens=False)["input_ids"], c, " " + x)
             for c, x in [("The cat", "sat on the mat"), ("Water boils at one hundred degrees.", "Ice"),
                          ("Question: Which is the largest planet?\nAnswer:", "Jupiter is the largest planet."),
                          ("the dog", "slept"), ("Ice melts", "in the sun and the cat sat on the mat by the door")]]
    one = harness.TorchScorer(model, tok, batch_size=1).loglikelihoods(pairs)
    seen = []
    many = harness.TorchScorer(model, tok, batch_size=4).loglikelihoods(pairs, progress=seen.append)
    torch.testing.assert_close(torch.tensor(many), torch.tensor(one), rtol=0, atol=1e-4)
    assert sum(seen) == len(pairs) and min(one) < -5


def test_truncation_keeps_the_end_like_lm_eval(tiny_llama):
    tok = tiny_tokenizer()
    model = tiny_llama(vocab=len(tok), seed=1)
    ctx, cont = list(range(10, 40)), [50, 51, 52]
    short = harness.TorchScorer(model, tok, max_length=8).loglikelihoods([(ctx, cont)])[0]
    ref = harness.TorchScorer(model, tok).loglikelihoods([((ctx + cont)[-9:-3], cont)])[0]
    assert short == pytest.approx(ref, abs=1e-5)


def test_divergence_self_is_zero_and_ppl_matches_perplexity_module(tiny_llama):
    tok = tiny_tokenizer()
    a, b = tiny_llama(vocab=len(tok), seed=0), tiny_llama(vocab=len(tok), seed=5)
    windows = torch.randint(1, len(tok), (3, 32), generator=torch.Generator().manual_seed(0))
    sa, sb = harness.TorchScorer(a, tok), harness.TorchScorer(b, tok)
    same = evaluate_windows(sa, windows, sa, "a")
    assert same.kl_mean == pytest.approx(0.0, abs=1e-6) and same.top1_agreement == 1.0
    assert same.ppl == pytest.approx(perplexity(a, windows), rel=1e-5) and same.n_tokens == 3 * 31
    diff = evaluate_windows(sb, windows, sa, "a")
    with torch.no_grad():
        la = torch.log_softmax(a(windows).logits.double(), -1)[:, :-1]
        lb = torch.log_softmax(b(windows).logits.double(), -1)[:, :-1]
    kl = (la.exp() * (la - lb)).sum(-1)
    assert diff.kl_mean == pytest.approx(kl.mean().item(), rel=1e-4) and diff.kl_max == pytest.approx(kl.max().item(), rel=1e-4)
    assert diff.top1_agreement == pytest.approx((la.argmax(-1) == lb.argmax(-1)).double().mean().item())
    assert diff.ppl == pytest.approx(perplexity(b, windows), rel=1e-5) and diff.ppl_ref == pytest.approx(same.ppl)
    assert kl_per_token(la[0], la[0]).abs().max() < 1e-9


@pytest.fixture(scope="module")
def f16_gguf(default_model, tmp_path_factory):
    """The default model exported to F16 by the project's exporter (same weights as the torch model)."""
    from adaprune_edge import models
    from adaprune_edge.exporters import gguf, vocab

    path = tmp_path_factory.mktemp("f16") / "default-f16.gguf"
    gguf.write_model(default_model.model, path, vocab.from_gguf(models.default_gguf_path()))
    scorer = harness.GGUFScorer.open(str(path), n_ctx=1024, threads=2)
    yield scorer
    scorer.close()


@pytest.mark.e2e
def test_torch_and_f16_gguf_agree_on_50_piqa(default_model, f16_gguf, shared_data):
    docs = tasks.subset(tasks.load("piqa", shared_data).docs, 50, 1234)
    torch_scorer = harness.TorchScorer(default_model.model, default_model.tokenizer, batch_size=16)
    pairs = harness.doc_pairs(torch_scorer, docs)
    assert harness.doc_pairs(f16_gguf, docs) == pairs  # llama.cpp's vocabulary gives the same ids
    lt = torch_scorer.loglikelihoods(pairs)
    lg = f16_gguf.loglikelihoods(pairs)
    group = lambda ll: [ll[2 * i: 2 * i + 2] for i in range(len(docs))]  # noqa: E731
    at, ag = harness.accuracy(docs, group(lt)), harness.accuracy(docs, group(lg))
    assert abs(at[0] - ag[0]) * 50 <= 1 and abs(at[1] - ag[1]) * 50 <= 1, (at, ag)
    diff = np.abs(np.array(lg) - np.array(lt))
    assert np.isfinite(lt).all() and max(lt) < 0 and diff.mean() < 0.1, diff.mean()  # summed nats, F16 vs fp32
    fresh = []
    for p in pairs[:4]:  # KV-prefix reuse must equal a fresh evaluation
        f16_gguf.llm.reset()
        fresh += f16_gguf.loglikelihoods([p])
    np.testing.assert_allclose(fresh, lg[:4], atol=1e-3)


@pytest.mark.e2e
def test_gguf_kl_vs_torch_is_small(default_model, f16_gguf):
    text = " ".join(CORPUS[:6])
    ids = default_model.tokenizer(text, add_special_tokens=False)["input_ids"][:64]
    torch_scorer = harness.TorchScorer(default_model.model, default_model.tokenizer)
    rep = evaluate_windows(f16_gguf, torch.tensor([ids]), torch_scorer, "torch")
    assert rep.kl_mean < 5e-3 and rep.top1_agreement >= 0.95 and rep.ppl == pytest.approx(rep.ppl_ref, rel=0.02)
