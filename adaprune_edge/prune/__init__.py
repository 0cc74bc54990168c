"""The pruning engine: statistics, importance, allocation, compensation, depth."""

from adaprune_edge.prune import profile  # noqa: F401  (registers the 'profile' allocation: ALLOCATIONS is complete once prune is imported)
