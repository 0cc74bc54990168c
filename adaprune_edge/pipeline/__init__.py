"""`build`: the resumable pipeline, its stages, the report, plots and trade-off sweeps."""
