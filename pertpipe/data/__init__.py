"""Stage 1: registry, downloads, sources and adapters, standardize, gene alignment, splits, ground truth."""
