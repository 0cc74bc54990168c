"""Runtime RAM of a shipped GGUF: a fresh llama.cpp process's RSS, next to the predicted figure."""

import pytest

from adaprune_edge import models
from adaprune_edge.latency import budget
from adaprune_edge.errors import ExportError
from adaprune_edge.exporters import gguf, vocab
from adaprune_edge.evaluate.runtime_ram import measure_runtime_ram
from adaprune_edge.archs.structure import Structure
from adaprune_edge.quant import QuantRecipe

R = QuantRecipe.parse




def test_runtime_ram_of_a_tiny_gguf(tiny_llama, tmp_path):
    # real 49152-token vocabulary so llama.cpp loads it; hidden 256 makes the weights (~27 MB F16) stand
    # out from the child's ~100 MB of Python + llama-cpp-python
    model = tiny_llama(layers=2, hidden=256, heads=4, kv_heads=2, ffn=512, vocab=49152)
    path = tmp_path / "tiny.gguf"
    gguf.write_model(model, path, vocab.from_gguf(models.default_gguf_path()))
    st = Structure.from_model(model)
    predicted = budget.ram_bytes(st, R("F16"), 512)
    ram = measure_runtime_ram(path, n_ctx=512, threads=1, predicted_bytes=predicted)
    weights = ram.rss_bytes - ram.baseline_rss_bytes
    assert ram.predicted_bytes == predicted and ram.file_bytes == path.stat().st_size
    # the output projection (tied embedding) reads every weight row per token, so the mapped file is resident
    assert 0.8 * st.gguf_bytes(R("F16")) < weights < predicted
    assert ram.baseline_rss_bytes < ram.rss_bytes <= ram.peak_rss_bytes
    # the child's own peak, not the (torch-loaded) test process's that ru_maxrss would carry over exec
    assert ram.peak_rss_bytes < ram.rss_bytes + 64 * 2**20


def test_runtime_ram_of_a_cut_file_is_one_error(tmp_path):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(models.default_gguf_path().read_bytes()[:100_000])
    with pytest.raises(ExportError, match="not a readable GGUF"):  # cut inside the vocabulary
        measure_runtime_ram(bad)
