"""The shipped file of a build vs what `adaprune-edge export --model default --quant Q4_0` writes (plain
llama.cpp Q4_0, no imatrix): llama.cpp perplexity on the build's report windows and on wikitext-2 valid
(second half, never calibrated on). Writes bench/results/shipped_vs_q4_0.json.

    python3 bench/shipped_vs_q4_0.py RUN_DIR      # e.g. runs/raspberry-pi-5
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
OUT = ROOT / "bench" / "results" / "shipped_vs_q4_0.json"


def main() -> None:
    from adaprune_edge.pipeline.context import BuildContext
    from adaprune_edge.data.calibration import split_text
    from adaprune_edge.exporters import quantize
    from adaprune_edge.evaluate.perplexity import read_text, token_windows
    from adaprune_edge.pipeline.build import BuildSpec, Hooks, RunDir
    from adaprune_edge.pipeline.quant_options import gguf_ppl
    from adaprune_edge.quant import QuantRecipe

    run = Path(sys.argv[1])
    spec = BuildSpec.from_dict(json.loads((run / "state.json").read_text())["spec"])
    ctx = BuildContext(spec, RunDir(run), Hooks())
    rep = json.loads((run / "report.json").read_text())
    report_set = ctx.report_windows().numpy()
    wiki = token_windows(ctx.dense.tokenizer, split_text(read_text(WIKI), 0.5)[1], 512, 4).numpy()
    out = {"run": str(run), "report_set": rep.get("data_sets", {}).get("report"), "wikitext": "wikitext-2 valid 2nd half, 4x512"}
    with tempfile.TemporaryDirectory() as tmp:
        q40 = Path(tmp) / "dense-Q4_0.gguf"
        quantize.quantize(run / "dense-F16.gguf", q40, QuantRecipe("Q4_0"))
        for name, path in (("export --quant Q4_0", q40), (f"shipped {rep['quant']}", Path(rep["gguf"]))):
            out[name] = {"file_bytes": path.stat().st_size, "report_set_ppl": round(gguf_ppl(path, report_set), 3),
                         "wikitext_ppl": round(gguf_ppl(path, wiki), 3)}
            print(name, out[name], flush=True)
    OUT.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
