"""The llama.cpp runtime: opening a GGUF with llama-cpp-python, logits, and the K/V cache types it runs with.

Low level: imports nothing above `errors`/`gguf`, so data, evaluate, latency and the exporters can all use it."""
