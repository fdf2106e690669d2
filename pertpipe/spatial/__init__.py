"""Spatial branch: ligand-receptor-focused imputation of spatial transcriptomics from paired scRNA-seq.

inputs (read a spatial + scRNA pair) -> resources (LR tables, complexes) -> priors (PPI Laplacian, ligand -> target)
-> latent (two encoders aligned by kNN; pseudo-labels) -> lrimpute (LR-only decoder) -> evaluate (k-fold held-out
LR genes, communication recovery) -> report. Baselines live in baselines.py.
"""
