"""Does the importance matrix help? Dense default model quantized with and without an imatrix (computed on
32 x 256 builtin:pydoc calibration windows), llama.cpp perplexity on 4 x 512 windows of wikitext-2 valid
(never calibrated on). Writes bench/results/imatrix.json after every recipe.

    python3 bench/imatrix.py IQ4_XS Q3_K_M Q2_K
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"
OUT = ROOT / "bench" / "results" / "imatrix.json"


def main() -> None:
    from adaprune_edge import models
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.exporters import gguf, quantize, vocab
    from adaprune_edge.exporters.imatrix import collect
    from adaprune_edge.evaluate.perplexity import read_text, token_windows
    from adaprune_edge.pipeline.quant_options import gguf_ppl
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.quant import QuantRecipe

    lm = models.load("default")
    st = Structure.from_model(lm.model)
    wins = token_windows(lm.tokenizer, read_text(WIKI), 512, 40)[-4:].numpy()
    calib = CalibrationPool.from_sources(["builtin:pydoc"], lm.tokenizer, 256, (0.0, 0.8)).windows[:32]
    out = {"eval": "wikitext-2 valid windows 36-39 of 512 tokens", "imatrix": "32x256 builtin:pydoc", "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        f16 = Path(tmp) / "f16.gguf"
        gguf.write_model(lm.model, f16, vocab.for_model(lm, st.vocab))
        out["f16_ppl"] = round(gguf_ppl(f16, wins), 3)
        im = collect(lm.model, calib, ("builtin:pydoc",))
        for ftype in sys.argv[1:]:
            row = {"ftype": ftype}
            for recipe, imat in ((QuantRecipe.parse(ftype), None), (QuantRecipe.parse(ftype).with_imatrix(), im)):
                path = Path(tmp) / "q.gguf"
                quantize.quantize(f16, path, recipe, imatrix=imat)
                row["with_imatrix" if imat else "without"] = {"file_bytes": path.stat().st_size,
                                                              "ppl": round(gguf_ppl(path, wins), 3)}
            out["rows"].append(row)
            OUT.write_text(json.dumps(out, indent=1))
            print(row, flush=True)


if __name__ == "__main__":
    main()
