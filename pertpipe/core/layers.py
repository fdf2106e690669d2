"""The one MLP helper every network here builds from (DyGenePT, CFM-VC, ctxfusion, the spatial branch).

``mlp(d_in, d_hidden, d_out)`` is ``hidden_layers`` blocks of Linear -> [LayerNorm] -> activation -> [Dropout],
then a Linear to ``d_out``. The module order (and so parameter names and initialisation order) is fixed by the
arguments, so a network built with it restores from checkpoints written by the same arguments.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def mlp(d_in: int, d_hidden: int, d_out: int, *, activation: str = "gelu", hidden_layers: int = 1,
        norm: bool = False, dropout: float | None = None) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(hidden_layers):
        layers.append(nn.Linear(d, d_hidden))
        if norm:
            layers.append(nn.LayerNorm(d_hidden))
        layers.append(ACTIVATIONS[activation]())
        if dropout is not None:
            layers.append(nn.Dropout(dropout))
        d = d_hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)
