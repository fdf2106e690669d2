"""Torch networks of the deep models (scvi-tools' ``module`` side): each owns its forward pass and its losses.

The user-facing classes in ``pertpipe.models`` (the ``model`` side) prepare data, call the shared training loop
and write predictions. These modules import torch, so the model classes import them only when they train or
load, and model discovery (which imports every top-level module of ``pertpipe.models``) does not import them.
"""
