"""The torch module of ``ctxfusion``: context head, signal head, fusion, decoder, and its loss.

    h_ctx = MLP_ctx(context features)                      context features: PCA of the context's control
                                                           baseline, or a frozen scGPT embedding of its cells
    h_sig = pool_c'( MLP_sig(z[p, c']) )                   z-scores of perturbation p in other contexts c'
                                                           (mean, or attention: the target context queries,
                                                           each source's context + signal is its key)
    gated:  g = sigmoid(W_g [h_ctx; h_sig] + b)            the context decides how much of each part passes
            h = g * h_sig + W_c h_ctx                      (context as gate and bias)
    concat: h = MLP([h_ctx; h_sig])                        (the plain dual-head design; no gate)
    y     = residual + Decoder(h)                          residual: the perturbation's mean shift over the
                                                           other contexts (``context_mean``), or none

The module owns its loss (mean squared error of the response in the target context).
"""

from __future__ import annotations

import torch
from torch import nn

from pertpipe.core.layers import mlp


def gelu_mlp(d_in: int, d_hidden: int, d_out: int, *, dropout: float = 0.0) -> nn.Sequential:
    """ctxfusion's MLP: one GELU hidden layer with dropout."""
    return mlp(d_in, d_hidden, d_out, dropout=dropout)


class SignalHead(nn.Module):
    """z-scores of a perturbation in several contexts -> one R^d vector per example (masked pooling)."""

    def __init__(self, d_in: int, d: int, hidden: int, *, pool: str, dropout: float) -> None:
        super().__init__()
        self.net = gelu_mlp(d_in, hidden, d, dropout=dropout)
        self.pool = pool
        if pool == "attention":
            self.query = nn.Linear(d, d, bias=False)
            self.key = nn.Linear(d, d, bias=False)

    def forward(self, z: torch.Tensor, mask: torch.Tensor, h_ctx: torch.Tensor | None = None,
                h_src: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` [B, C, G] (C source contexts), ``mask`` [B, C] (True = present); ``h_ctx`` [B, d] the target
        context, ``h_src`` [B, C, d] the source contexts (attention only). Returns (h_sig [B, d], weights [B, C])."""
        h = self.net(z)  # B, C, d
        if self.pool == "attention" and h_ctx is not None and h_src is not None:
            # a source's key: its context and its own signal (so a weak or odd measurement can weigh less)
            logits = (self.query(h_ctx).unsqueeze(1) * self.key(h_src + h)).sum(-1) / h.shape[-1] ** 0.5
        else:
            logits = torch.zeros(mask.shape, device=z.device)
        logits = logits.masked_fill(~mask, float("-inf"))
        w = torch.softmax(logits, dim=1)
        w = torch.nan_to_num(w, nan=0.0)  # an example without any source context
        return (w.unsqueeze(-1) * h).sum(1), w


class Gate(nn.Module):
    """g = sigmoid(W_g [h_ctx; h_sig] + b); h = g * h_sig + W_c h_ctx."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * d, d)
        self.ctx_bias = nn.Linear(d, d, bias=False)

    def forward(self, h_ctx: torch.Tensor, h_sig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.sigmoid(self.gate(torch.cat([h_ctx, h_sig], dim=-1)))
        return g * h_sig + self.ctx_bias(h_ctx), g


class CtxFusionModule(nn.Module):
    def __init__(self, n_genes: int, ctx_dim: int, sig_dim: int, *, d: int = 64, hidden: int = 256,
                 fusion: str = "gated", pool: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        self.fusion = fusion
        self.ctx = gelu_mlp(ctx_dim, hidden, d, dropout=dropout)
        self.signal = SignalHead(sig_dim, d, hidden, pool=pool, dropout=dropout)
        if fusion == "gated":
            self.fuse = Gate(d)
        else:
            self.fuse = gelu_mlp(2 * d, hidden, d, dropout=dropout)
        self.decoder = gelu_mlp(d, hidden, n_genes, dropout=dropout)
        nn.init.zeros_(self.decoder[-1].weight)  # starts at the residual (context_mean) and learns the change
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, ctx_feat: torch.Tensor, z: torch.Tensor, mask: torch.Tensor, residual: torch.Tensor,
                src_feat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h_ctx = self.ctx(ctx_feat)
        h_src = self.ctx(src_feat) if src_feat is not None else None
        h_sig, w = self.signal(z, mask, h_ctx, h_src)
        if self.fusion == "gated":
            h, g = self.fuse(h_ctx, h_sig)
        else:
            h, g = self.fuse(torch.cat([h_ctx, h_sig], dim=-1)), None
        out = {"y": residual + self.decoder(h), "weights": w}
        if g is not None:
            out["gate"] = g
        return out

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = self(batch["ctx"], batch["z"], batch["mask"], batch["residual"], batch.get("src"))
        mse = ((out["y"] - batch["y"]) ** 2).mean()
        parts = {"mse": float(mse.detach())}
        if "gate" in out:
            parts["gate_mean"] = float(out["gate"].detach().mean())
        return mse, parts


class LabelGate(nn.Module):
    """The labels task's fusion (:class:`pertpipe.models.ctxfusion_labels.FusionLearner`), per kind and line:
    signal = w₀·has_label + w₁·(label_o - ½) + w₂·has_rate·logit(rate_o) + w₃·(transfer - ½); context = v₁·score + v₀;
    gated: σ(a₀ + a₁·has_label + a₂·has_rate + a₃·has_transfer) mixes them, else they add; + b_g."""

    def __init__(self, n_lines: int, G: int, gated: bool) -> None:
        super().__init__()
        self.gated = gated
        # [kind, line]: w0, w1 (label), w2 (rate), w3 (transfer); the signal head starts as xctx_rate does
        # (label, then rate) plus the transfer score
        self.w = nn.Parameter(torch.tensor([0.0, 4.0, 1.0, 4.0]).repeat(2, n_lines, 1))
        self.v = nn.Parameter(torch.tensor([1.0, 0.0]).repeat(2, n_lines, 1))  # v1, v0
        self.a = nn.Parameter(torch.zeros(2, 4))
        self.b = nn.Parameter(torch.zeros(2, G))

    def forward(self, kind: int, X: torch.Tensor, line: torch.Tensor, gene: torch.Tensor) -> torch.Tensor:
        w, v, a = self.w[kind][line], self.v[kind][line], self.a[kind]
        sig = w[:, 0] * X[:, 0] + w[:, 1] * X[:, 1] + w[:, 2] * X[:, 3] * X[:, 2] + w[:, 3] * X[:, 6]
        ctx = v[:, 0] * X[:, 4] + v[:, 1]
        if self.gated:
            g = torch.sigmoid(a[0] + a[1] * X[:, 0] + a[2] * X[:, 2] + a[3] * X[:, 5])
            return g * sig + (1 - g) * ctx + self.b[kind][gene]
        return sig + ctx + self.b[kind][gene]


class LabelMLP(nn.Module):
    """The labels task's nonlinear fusion (``label_fusion: mlp``): per kind, an ensemble of ``members`` MLPs (two ReLU
    hidden layers) on the same per-(row, gene) features as :class:`LabelGate` (standardised with the training
    pairs' mean and sd, kept as buffers) and the line as a one-hot; the score is the members' mean logit.

    Where the linear heads add the other lines' label, their DE rate, the transfer score and the knowledge score
    with one weight each per line, this head lets each term's weight depend on the others (the knowledge score
    where the other lines say nothing, the label where the perturbation is strong there). It owns its loss (BCE)
    and its minibatch fit (:meth:`fit_pairs`)."""

    def __init__(self, n_lines: int, n_feats: int, hidden: int, members: int) -> None:
        super().__init__()
        self.n_lines = n_lines
        self.nets = nn.ModuleList(
            nn.ModuleList(mlp(n_feats + n_lines, hidden, 1, activation="relu", hidden_layers=2) for _ in range(members))
            for _ in range(2))
        self.register_buffer("mu", torch.zeros(2, n_feats))
        self.register_buffer("sd", torch.ones(2, n_feats))

    def _inputs(self, kind: int, X: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(line.long(), self.n_lines).to(X.dtype)
        return torch.cat([(X - self.mu[kind]) / self.sd[kind], onehot], 1)

    def forward(self, kind: int, X: torch.Tensor, line: torch.Tensor, gene: torch.Tensor) -> torch.Tensor:
        h = self._inputs(kind, X, line)
        return torch.stack([m(h)[:, 0] for m in self.nets[kind]]).mean(0)

    def loss(self, kind: int, member: int, X: torch.Tensor, line: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(self.nets[kind][member](self._inputs(kind, X, line))[:, 0], y)

    def fit_pairs(self, kind: int, X: torch.Tensor, line: torch.Tensor, y: torch.Tensor, *, epochs: int,
                  batch_size: int, lr: float, seed: int) -> float:
        """Fit kind ``kind``'s members on the labelled pairs (each member its own initialisation and order, from
        ``seed``); returns the last epoch's mean loss over members."""
        self.mu[kind], self.sd[kind] = X.mean(0), X.std(0).clamp_min(1e-6)
        last = 0.0
        for j, net in enumerate(self.nets[kind]):
            g = torch.Generator().manual_seed(seed * 1009 + kind * 101 + j)
            for p in net.parameters():  # a member's own initialisation, from its own generator
                if p.dim() > 1:
                    nn.init.kaiming_uniform_(p, a=5 ** 0.5, generator=g)
                else:
                    nn.init.uniform_(p, -0.1, 0.1, generator=g)
            opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
            for _ in range(epochs):
                perm, tot = torch.randperm(len(X), generator=g), 0.0
                for i in range(0, len(X), batch_size):
                    b = perm[i:i + batch_size]
                    opt.zero_grad()
                    loss = self.loss(kind, j, X[b], line[b], y[b])
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach()) * len(b)
            last += tot / len(X) / len(self.nets[kind])
        return last


class KindHeads(nn.Module):
    """The labels task's fusion per kind: ``heads[k]`` scores kind k (0 DE, 1 direction); one module may serve both."""

    def __init__(self, heads: list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(dict.fromkeys(heads))  # each distinct module once (its state saved once)
        self.index = [list(self.heads).index(h) for h in heads]

    def head(self, kind: int) -> nn.Module:
        return self.heads[self.index[kind]]

    def forward(self, kind: int, X: torch.Tensor, line: torch.Tensor, gene: torch.Tensor) -> torch.Tensor:
        return self.head(kind)(kind, X, line, gene)
