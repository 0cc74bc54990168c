"""adaprune-edge: sample-aware adaptive structured pruning of causal LMs into device-sized GGUF models."""

__version__ = "0.1.0"

from adaprune_edge.errors import AdapruneError  # noqa: E402

__all__ = ["AdapruneError", "__version__"]
