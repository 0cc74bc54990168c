"""Evaluation: perplexity, divergence, multiple-choice tasks, validation of GGUF files."""
