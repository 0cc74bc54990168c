"""The pruning engine: statistics, importance, allocation, slicing, compensation, depth."""
