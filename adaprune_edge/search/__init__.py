"""The AdaPruner search: space, objective, SMAC run, trials on disk, evaluators, plan."""
