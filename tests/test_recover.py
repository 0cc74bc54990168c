"""Recovery (distillation of a pruned student from its dense teacher) on tiny random Llamas."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from adaprune_edge.errors import ConfigError
from adaprune_edge.recover import lora
from adaprune_edge.recover.checkpoint import Checkpoint
from adaprune_edge.recover.config import RecoverConfig
from adaprune_edge.recover.distill import gap_closed, recover
from adaprune_edge.recover.targets import TeacherTargets, sparse_kl


def _pair(tiny_llama):
    """A dense teacher and a damaged copy (the upper half of every FFN zeroed)."""
    teacher = tiny_llama(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=256, seed=0, tied=False)
    with torch.no_grad():  # peaked output distributions, so the damage shows as KL (~0.016 nats/token)
        teacher.lm_head.weight.mul_(8.0)
    student = copy.deepcopy(teacher)
    with torch.no_grad():  # zero the upper half of every FFN: a damaged student, same shapes
        for layer in student.model.layers:
            layer.mlp.down_proj.weight[:, 48:] = 0
    return teacher, student


def _windows(n=8, t=32, vocab=256, seed=1):
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def _kl_to(teacher, student, windows):
    with torch.no_grad():
        lt = torch.log_softmax(teacher(input_ids=windows).logits, -1)
        ls = torch.log_softmax(student(input_ids=windows).logits, -1)
    return float((lt.exp() * (lt - ls)).sum(-1).mean())


def test_sparse_kl_is_exact_with_full_vocabulary():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    lt = torch.log_softmax(t, -1)
    full = (lt.exp() * (lt - torch.log_softmax(s, -1))).sum(-1)
    top, ids = lt.topk(16, -1)
    torch.testing.assert_close(sparse_kl(s, top, ids, 1.0), full, atol=1e-5, rtol=1e-5)
    top4, ids4 = lt.topk(4, -1)  # the k+1 partition's KL never exceeds the full KL (data processing)
    assert (sparse_kl(s, top4, ids4, 1.0) <= full + 1e-6).all()
    assert float(sparse_kl(t, top4, ids4, 1.0).abs().max()) < 1e-5  # student == teacher → 0


def test_kl_to_teacher_falls(tiny_llama):
    teacher, student = _pair(tiny_llama)
    train, held = _windows(16, seed=1), _windows(8, seed=2)
    before = _kl_to(teacher, student, held)
    cfg = RecoverConfig(lr=3e-4, batch_size=4, seq_len=32, max_tokens=60 * 4 * 32, bf16=False, warmup_steps=1)
    res = recover(student, teacher, train, cfg, device=torch.device("cpu"))
    after = _kl_to(teacher, student, held)
    assert res.steps == 60 and res.tokens == 60 * 128 and res.epochs == 15.0
    assert res.kl_last < 0.3 * res.kl_first
    assert after < 0.7 * before  # on windows it never trained on (measured 0.0163 → 0.0080)
    assert all(not p.requires_grad for p in student.parameters())


def test_decoder_mode_keeps_the_embedding(tiny_llama):
    teacher, student = _pair(tiny_llama)
    emb = student.model.embed_tokens.weight.clone()
    cfg = RecoverConfig(lr=3e-3, batch_size=4, seq_len=32, max_tokens=4 * 128, bf16=False)
    recover(student, teacher, _windows(), cfg, device=torch.device("cpu"))
    torch.testing.assert_close(student.model.embed_tokens.weight, emb, atol=0, rtol=0)


def test_lora_is_merged_into_plain_linears(tiny_llama):
    teacher, student = _pair(tiny_llama)
    held = _windows(8, seed=2)
    before = _kl_to(teacher, student, held)
    cfg = RecoverConfig(train="lora", lora_rank=4, lr=1e-3, batch_size=4, seq_len=32, max_tokens=60 * 128,
                        bf16=False, warmup_steps=1)
    res = recover(student, teacher, _windows(16), cfg, device=torch.device("cpu"))
    assert not any(isinstance(m, lora.LoRALinear) for m in student.modules())
    assert set(student.state_dict()) == set(teacher.state_dict())
    assert res.trainable_params == sum(4 * (l.in_features + l.out_features) for _, _, l in lora.projections(teacher))
    assert _kl_to(teacher, student, held) < 0.95 * before  # measured 0.0198 → 0.0184 (LoRA learns slowly here)


def test_lora_merge_keeps_the_function(tiny_llama):
    model = tiny_llama(layers=2, seed=3)
    w = _windows(2)
    wrapped = lora.attach(model, 4)
    with torch.no_grad():
        for m in wrapped:
            m.lora_b.normal_(0, 0.05)
        ref = model(input_ids=w).logits
    assert lora.merge(model) == len(wrapped) == 14
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=w).logits, ref, atol=1e-5, rtol=1e-4)


def test_killed_run_resumes_from_its_checkpoint(tiny_llama, tmp_path):
    """Training 10 steps, then resuming to 20, gives the same weights as 20 steps in one go."""
    teacher, student = _pair(tiny_llama)
    one_go, parts = copy.deepcopy(student), copy.deepcopy(student)
    w = _windows(12)
    base = dict(lr=3e-3, batch_size=4, seq_len=32, bf16=False, checkpoint_every=5, warmup_steps=1)
    recover(one_go, teacher, w, RecoverConfig(max_tokens=20 * 128, **base), tmp_path / "a", device=torch.device("cpu"))
    first = recover(parts, teacher, w, RecoverConfig(max_tokens=10 * 128, **base), tmp_path / "b", device=torch.device("cpu"))
    assert first.steps == 10
    second = recover(parts, teacher, w, RecoverConfig(max_tokens=20 * 128, **base), tmp_path / "b", device=torch.device("cpu"))
    assert second.resumed_at_step == 10 and second.steps == 20 and second.tokens == 20 * 128
    for (n, a), (_, b) in zip(one_go.named_parameters(), parts.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=n)
    again = recover(parts, teacher, w, RecoverConfig(max_tokens=20 * 128, **base), tmp_path / "b", device=torch.device("cpu"))
    assert again.steps == 20  # a finished run resumed trains no more


def test_checkpoint_refuses_other_settings(tiny_llama, tmp_path):
    teacher, student = _pair(tiny_llama)
    w = _windows(8)
    base = dict(batch_size=4, seq_len=32, bf16=False, max_tokens=2 * 128)
    recover(copy.deepcopy(student), teacher, w, RecoverConfig(lr=1e-3, **base), tmp_path, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="other settings.*lr"):
        recover(copy.deepcopy(student), teacher, w, RecoverConfig(lr=2e-3, **base), tmp_path, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match="other text"):
        recover(copy.deepcopy(student), teacher, _windows(8, seed=5), RecoverConfig(lr=1e-3, **base), tmp_path,
                device=torch.device("cpu"))


def test_teacher_targets_round_trip():
    t = TeacherTargets({"temperature": 1.0, "top_k": 3, "seq_len": 4})
    t.rows[2] = (torch.randn(4, 3).half(), torch.randint(0, 9, (4, 3), dtype=torch.int32))
    back = TeacherTargets.from_state(t.state(), t.key)
    torch.testing.assert_close(back.rows[2][0], t.rows[2][0])
    assert len(TeacherTargets.from_state(t.state(), {**t.key, "top_k": 4})) == 0  # other key: not reused


def test_config_needs_a_bound():
    with pytest.raises(ConfigError, match="bound"):
        RecoverConfig().validate()
    with pytest.raises(ConfigError, match="--train"):
        RecoverConfig(train="everything", max_tokens=1).validate()


def test_gap_closed():
    assert gap_closed(40.0, 40.0, 20.0) == 0.0
    assert math.isclose(gap_closed(40.0, 20.0, 20.0), 1.0)
    assert math.isclose(gap_closed(40.0, math.sqrt(800), 20.0), 0.5)


def test_a_run_from_before_the_recover_stage_resumes(tmp_path):
    """state.json of an older build (no recover_* options, export done, no recover stage) resumes: its spec
    gets today's defaults and its recover stage is recorded as not run, so nothing is recovered after export."""
    import json

    from adaprune_edge.pipeline.build import STATE_FILE, BuildSpec, RunDir

    spec = BuildSpec(device="this-host")
    old = {k: v for k, v in spec.to_dict().items() if not k.startswith("recover_")}
    done = json.loads((Path(__file__).parent / "data" / "state-quant-only.json").read_text())["done"]
    done = {k: done[k] for k in ("candidates", "plan", "search", "prune", "export")}
    (tmp_path / STATE_FILE).write_text(json.dumps({"spec": old, "done": done}))
    state = RunDir(tmp_path).open(spec, resume=True, force=False)
    assert state.recover.skipped.startswith("this run was exported before")
    changed = BuildSpec(device="this-host", recover_minutes=5.0)
    with pytest.raises(ConfigError, match="recover_minutes"):
        RunDir(tmp_path).open(changed, resume=True, force=False)


def test_plan_estimate_follows_the_measured_curve(monkeypatch):
    from types import SimpleNamespace

    from adaprune_edge.recover import estimate

    monkeypatch.setattr(estimate, "CURVE", ((0, 0.0), (100, 0.5), (200, 0.6)))
    monkeypatch.setattr(estimate, "CPU_TOKENS_PER_S", 1.0)
    spec = SimpleNamespace(recover_tokens=0, recover_minutes=2.5)  # 150 tokens at 1 token/s
    est = estimate.recovered(spec, 40.0, 10.0)
    assert est.tokens == 150 and est.closure == pytest.approx(0.55)
    assert est.ppl == pytest.approx(math.exp(math.log(40) - 0.55 * math.log(4)))
    assert estimate.recovered(SimpleNamespace(recover_tokens=1000, recover_minutes=0), 40.0, 10.0).closure == 0.6
    assert estimate.recovered(SimpleNamespace(recover_tokens=0, recover_minutes=0), 40.0, 10.0) is None
