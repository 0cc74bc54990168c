"""Latency of a GGUF model on a device: backends (local, ssh, predict), cache, budget, profiling."""
