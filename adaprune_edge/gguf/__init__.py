"""GGUF metadata keys and header reading."""
