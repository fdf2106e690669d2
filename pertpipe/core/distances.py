"""Distances between point clouds (rows = cells), differentiable: the deep models' distribution losses and checks."""

from __future__ import annotations


def mmd_rbf(x, y):
    """Biased MMD² with a Gaussian kernel at the median-distance bandwidth (per group)."""
    import torch

    xy = torch.cat([x, y], 0)
    d = torch.cdist(xy, xy) ** 2
    bw = d.detach().median().clamp(min=1e-6)
    k = torch.exp(-d / bw)
    nx = x.shape[0]
    return k[:nx, :nx].mean() + k[nx:, nx:].mean() - 2 * k[:nx, nx:].mean()


def energy_distance(x, y):
    """Energy distance 2E|x-y| - E|x-x'| - E|y-y'| (a 0-d tensor; arrays are taken as tensors)."""
    import torch

    x, y = torch.as_tensor(x), torch.as_tensor(y)
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
