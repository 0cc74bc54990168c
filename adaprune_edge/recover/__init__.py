"""Recovery after pruning: logit distillation of the pruned model from the dense one (distill.py)."""
