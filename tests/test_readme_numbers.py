"""README numbers come from result files: each headline figure is recomputed from its JSON under
bench/results/ and formatted as the README prints it, so a re-run benchmark and a stale README disagree here."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = ROOT / "bench" / "results"


def _rows(name: str) -> dict[str, dict]:
    return {r["recipe"]: r for r in json.loads((RESULTS / name).read_text())["rows"]}


def _in_readme(text: str) -> None:
    flat = " ".join(README.split())  # the README wraps lines anywhere
    assert text in flat, f"README does not say {text!r}"


def _sci(x: float) -> str:
    return f"{x:.1e}".replace("e+0", "e")  # 2.9e+06 → 2.9e6, as the README writes it


def test_every_named_result_file_exists():
    named = set(re.findall(r"bench/results/([\w.\-]+\.json)", README))
    assert named, "the README names no result file"
    for name in named:
        assert (RESULTS / name).is_file(), name


@pytest.mark.parametrize("target,names", [
    ("0.2", ("FLAP-like flap-like", "LLM-Pruner-like llm-pruner-like", "Wanda-sp wanda-sp", "ShortGPT-like shortgpt-like")),
    ("0.35", ("LLM-Pruner-like llm-pruner-like", "Wanda-sp wanda-sp", "FLAP-like flap-like", "ShortGPT-like shortgpt-like")),
])
def test_search_vs_fixed_headline(target, names):
    rows = _rows(f"search_vs_fixed_{target}.json")
    for pair in names:
        label, key = pair.split()
        _in_readme(f"{label} {rows[key]['ppl_wikitext']:.2f}")
    fixed = [r for k, r in rows.items() if k not in ("dense", "searched")]
    best = min(fixed, key=lambda r: r["ppl_wikitext"])
    best_ptb = min(r["ppl_ptb"] for r in fixed)
    s = rows["searched"]
    gain = (best["ppl_wikitext"] - s["ppl_wikitext"]) / best["ppl_wikitext"]
    _in_readme(f"search {s['ppl_wikitext']:.2f} (+{100 * gain:.1f}%")
    _in_readme(f"PTB {s['ppl_ptb']:.2f} vs {best_ptb:.2f}")
    pruned_ms = [r["measured_ms"] for k, r in rows.items() if k != "dense"]
    _in_readme(f"{min(pruned_ms):.2f}–{max(pruned_ms):.2f}")
    _in_readme(f"(dense {rows['dense']['measured_ms']:.2f})")


def test_search_vs_fixed_dense_and_ratio():
    rows = _rows("search_vs_fixed_0.2.json")
    _in_readme(f"PPL dense {rows['dense']['ppl_wikitext']:.2f}")
    _in_readme(f"(the search at {100 * rows['searched']['decoder_ratio']:.1f}%)")
    _in_readme(f"magnitude {_sci(rows['magnitude-uniform']['ppl_wikitext'])}")


def test_latency_predictor_error():
    fit = json.loads((RESULTS / "latency_predictor.json").read_text())["fit"]
    _in_readme(f"median {100 * fit['median_rel_error']:.1f}%, max {100 * fit['max_rel_error']:.1f}%")


def test_head_pruning_figures():
    rows = json.loads((RESULTS / "prune_quality.json").read_text())["rows"]
    dense = next(r for r in rows if r["metric"] == "dense")
    heads = [r for r in rows if r.get("head_unit") == "query" and r["ratio"] == 0.2]
    wanda = next(r for r in heads if (r["metric"], r["allocation"]) == ("wanda", "global"))
    _in_readme(f"against {dense['ppl']:.2f} dense")
    _in_readme(f"wanda/global {wanda['ppl']:.1f}")
    _in_readme(f"perplexity {min(r['ppl'] for r in heads):.0f} (taylor/global) to {_sci(max(r['ppl'] for r in heads))} (l1/uniform)")


def test_main_job_example_and_quant_only_comparison():
    rep = json.loads((RESULTS / "main_job_raspberry-pi-5.json").read_text())
    _in_readme(f"default → raspberry-pi-5 ({rep['quant']})")
    _in_readme(f"│ KL vs dense (nats/token) │ 0 │ {rep['quant_only']['kl_vs_dense']:.3f} │ {rep['kl_vs_dense']:.3f} │")
    _in_readme(f"{rep['pruned']['ppl']:.2f}")
    cmp = json.loads((RESULTS / "shipped_vs_q4_0.json").read_text())
    q40, shipped = cmp["export --quant Q4_0"], cmp[f"shipped {rep['quant']}"]
    _in_readme(f"perplexity {q40['report_set_ppl']:.2f} vs the shipped file's {shipped['report_set_ppl']:.2f}")
    _in_readme(f"and {q40['wikitext_ppl']:.2f} vs {shipped['wikitext_ppl']:.2f} on 4x512 tokens")
    assert shipped["report_set_ppl"] <= q40["report_set_ppl"]  # the bar: never worse than plain Q4_0
