"""The README's generated blocks: each is rendered from its result JSON under bench/results/ by the bench's own
table function (or, for the main job, from its report.json), between `<!-- figures:NAME -->` and
`<!-- /figures:NAME -->`. `python3 bench/readme_figures.py` re-renders them after its jobs;
tests/test_readme_numbers.py asserts that rendering the README changes nothing."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from textwrap import fill
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BLOCK = re.compile(r"(<!-- figures:([\w-]+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.S)


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60)} s"


def summary_text(rep: dict) -> str:
    """The build's summary table as the CLI prints it (rich, 130 columns, no colour)."""
    from rich.console import Console

    from adaprune_edge.cli.build_cmd import summary_table

    buf = io.StringIO()
    Console(file=buf, width=130, no_color=True, force_terminal=False, highlight=False).print(summary_table(rep))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def main_job() -> str:
    rep, cmp = _json("main_job_raspberry-pi-5.json"), _json("shipped_vs_q4_0.json")
    run, b, q = rep["readme_run"], rep["binding"], rep["quant"]
    scored = sorted((o for o in rep["quant_options"] if o.get("ppl")), key=lambda o: o["ppl"])
    meets = [o for o in rep["quant_options"] if o["r_min"] == 0.0]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in rep["stage_seconds"].items() if v >= 1)
    q40, shipped = cmp["export --quant Q4_0"], cmp[f"shipped {q}"]
    head = (f"The main job, `{run['command']}` on the embedded default model (this 2-core host, "
            f"{_minutes(run['wall_s'])} wall, peak RSS {run['max_rss_kib']:,} KiB by `/usr/bin/time -v`, commit {run['commit']}; "
            f"stages: {stages}). Every figure in this block is from that build's `report.json`, kept as "
            "`bench/results/main_job_raspberry-pi-5.json`, and rendered here by `python3 bench/readme_figures.py`:")
    shipped_opt = next((o for o in scored if o["recipe"] == q), None)
    where = (f", PPL {shipped_opt['ppl']:.2f} on the objective windows" if shipped_opt else "")
    body = (f"{len(meets)} of the {len(rep['quant_options'])} dense candidates meet the "
            f"budget unpruned. The shipped file: {rep['pruned']['file_bytes'] / 1e6:.1f} MB, "
            f"{rep['pruned']['decode_ms_per_token']:.2f} ms/token ({rep['latency_source']}){where}; binding limit: "
            f"{b['name']}, {b['value']:.4g} {b['unit']} against {b['limit']:.4g} ({b['margin']:.1%} headroom); on the "
            f"report set {rep['pruned']['ppl']:.2f} against the dense model's {rep['dense']['ppl']:.2f}, KL "
            f"{rep['kl_vs_dense']:.3f}. Scored in `candidates` (llama.cpp, objective windows; PPL / KL to the dense torch "
            "model; `quant_options` in that JSON): "
            + ", ".join(f"{o['recipe']} {o['ppl']:.2f} / {o['kl']:.4f}" for o in scored[:6])
            + f". On the same report windows the file `adaprune-edge export --model default --quant Q4_0` writes has "
            f"perplexity {q40['report_set_ppl']:.2f} vs the shipped file's {shipped['report_set_ppl']:.2f}, and "
            f"{q40['wikitext_ppl']:.2f} vs {shipped['wikitext_ppl']:.2f} on 4x512 tokens of wikitext-2 valid's second half "
            "(`python3 bench/shipped_vs_q4_0.py RUN_DIR` on the main job's run folder → `bench/results/shipped_vs_q4_0.json`).")
    wrap = lambda text: fill(text, 112, break_on_hyphens=False, break_long_words=False)  # noqa: E731
    return "\n".join([wrap(head), "", "```", summary_text(rep), f"decision: {rep['decision']}", "```", "", wrap(body)])


def _headline() -> str:
    bench, data = _bench("search_vs_fixed"), _json("search_vs_fixed_fair32r.json")
    return bench.markdown(bench.summary(data["rows"]), data["dense"])


def _search_cost(name: str) -> Callable[[], str]:
    return lambda: _bench("search_cost").markdown(_json(name)["summary"])


BLOCKS: dict[str, Callable[[], str]] = {
    "main-job": main_job,
    "quant-vs-prune-front": lambda: _bench("quant_vs_prune_front").table(_json("quant_vs_prune_front.json")),
    "calibration": lambda: _bench("calibration").table(_json("calibration.json")["rows"]),
    "budgets": lambda: _bench("budgets").table(_json("budgets.json")["rows"]),
    "kv-cache": lambda: _bench("kv_cache").table(_json("kv_cache.json")),
    "recovery": lambda: _bench("recovery").table(_json("recovery.json")),
    "search-headline": _headline,
    "search-cost": _search_cost("search_cost.json"),
    "search-cost-recovery": _search_cost("search_cost_recovery.json"),
}


def rendered(text: str) -> str:
    """The README text with every generated block rendered again from its JSON."""
    def one(m: re.Match) -> str:
        if m.group(2) not in BLOCKS:
            raise KeyError(f"README block {m.group(2)!r} has no renderer (known: {', '.join(BLOCKS)})")
        return f"{m.group(1)}{BLOCKS[m.group(2)]().rstrip()}\n{m.group(4)}"

    return BLOCK.sub(one, text)


def blocks(text: str) -> dict[str, str]:
    return {m.group(2): m.group(3) for m in BLOCK.finditer(text)}


def render_readme(path: Path) -> list[str]:
    """Re-render the README's blocks in place (temp file + rename); the names of the blocks that changed."""
    old = path.read_text()
    new = rendered(old)
    if new != old:
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(path)
    before, after = blocks(old), blocks(new)
    return [k for k in after if before.get(k) != after[k]]
