"""The DyGenePT network: facet cross-attention by cell state, a latent shift, a decoder; its losses.

See :mod:`pertpipe.models.dygenept` for the model as a whole. Shapes: B groups (target, cell type) of n cells,
T target slots (2: singles and doubles), K facets of dimension D, H heads of dimension A, G genes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from pertpipe.core.distances import energy_distance, mmd_rbf
from pertpipe.core.layers import mlp


@dataclass
class GroupBatch:
    """One training batch: for each of B (target, cell type) groups, n control and n perturbed cells."""

    zq: torch.Tensor  # [B, n, d] querier input of the control cells
    zc: torch.Tensor  # [B, n, k] PCA coordinates of the control cells
    zp: torch.Tensor  # [B, n, k] PCA coordinates of the perturbed cells
    facets: torch.Tensor  # [B, T, K, D]
    fmask: torch.Tensor  # [B, T, K]
    tmask: torch.Tensor  # [B, T]
    delta: torch.Tensor  # [B, G] observed pseudobulk change minus the prior
    prior: torch.Tensor  # [B, G] the knowledge prior's shift

    def take(self, lo: int, hi: int) -> GroupBatch:
        """Groups ``lo..hi-1`` (one process's share under data-parallel training)."""
        return GroupBatch(*(getattr(self, f.name)[lo:hi] for f in fields(self)))


class GroupSampler:
    """Draws :class:`GroupBatch` es from cells encoded once (PCA / querier inputs) with a seeded generator."""

    def __init__(self, Z: np.ndarray, Zq: np.ndarray, ctrl_idx: dict[str, np.ndarray], groups: list[tuple],
                 facets: dict[str, tuple], priors: list[np.ndarray], *, cells_per_group: int, device: str) -> None:
        self.Z, self.Zq = torch.tensor(Z, device=device), torch.tensor(Zq, device=device)
        self.ctrl_idx, self.groups, self.n = ctrl_idx, groups, cells_per_group
        self.facets = {t: tuple(torch.tensor(a, device=device) for a in arrays) for t, arrays in facets.items()}
        self.deltas = [torch.tensor(g[3], device=device) for g in groups]
        self.priors = [torch.tensor(pr, dtype=torch.float32, device=device) for pr in priors]
        self.index = {id(g): i for i, g in enumerate(groups)}

    def batch(self, sel: list[tuple], gen: torch.Generator) -> GroupBatch:
        zq, zc, zp, fs, ms, ts, dl, pr = [], [], [], [], [], [], [], []
        n = self.n
        for g in sel:
            t, ct, cells, _ = g
            ci = self.ctrl_idx[ct][torch.randint(len(self.ctrl_idx[ct]), (n,), generator=gen).numpy()]
            pi = cells[torch.randint(len(cells), (n,), generator=gen).numpy()]
            zq.append(self.Zq[ci])
            zc.append(self.Z[ci])
            zp.append(self.Z[pi])
            f, m, tt = self.facets[t]
            fs.append(f), ms.append(m), ts.append(tt)
            dl.append(self.deltas[self.index[id(g)]])
            pr.append(self.priors[self.index[id(g)]])
        return GroupBatch(*(torch.stack(x) for x in (zq, zc, zp, fs, ms, ts, dl, pr)))


class DyGenePTModule(nn.Module):
    """Querier -> multi-head masked sparsemax/entmax/softmax attention over facets -> latent shift -> decoder."""

    def __init__(self, n_genes: int, latent_dim: int, facet_dim: int, hidden: int, attn_dim: int, heads: int,
                 normaliser: str, *, gain_dim: int = 0, residual: str = "full") -> None:
        super().__init__()
        self.heads, self.attn_dim, self.normaliser = heads, attn_dim, normaliser
        ha = heads * attn_dim
        self.querier = mlp(latent_dim, hidden, hidden)
        self.W_Q = nn.Linear(hidden, ha)
        self.q_norm = nn.LayerNorm(ha)
        self.W_K = nn.Linear(facet_dim, ha, bias=False)
        self.W_V = nn.Linear(facet_dim, ha, bias=False)
        self.unknown = nn.Parameter(torch.zeros(ha))
        self.shift = mlp(2 * ha, hidden, hidden)
        self.interact = mlp(2 * ha, hidden, hidden)
        self.decoder = mlp(hidden, hidden, n_genes)
        # the learned correction starts at exactly the prior: the decoder's change and the gain start at zero
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)
        self.gain_dim, self.residual = gain_dim, residual
        # a linear read-out of the state-weighted facets (a per-state ridge over the facets, learned jointly)
        self.readout = nn.Linear(ha, n_genes)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        if gain_dim:
            # the prior's shift, gated per cell state and target along the cells' principal axes (comps [G, k]):
            # a cell type where a programme is silent can damp what the (context-blind) prior says of it
            self.register_buffer("comps", torch.zeros(n_genes, gain_dim))
            self.gain = mlp(hidden + ha, hidden, gain_dim)
            nn.init.zeros_(self.gain[-1].weight)
            nn.init.zeros_(self.gain[-1].bias)
            # ... and per gene: the state scales each gene's prior shift (a programme silent in a cell type)
            self.gene_gain = nn.Linear(hidden, n_genes)
            nn.init.zeros_(self.gene_gain.weight)
            nn.init.zeros_(self.gene_gain.bias)

    def normalise(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # a bounded large negative: finfo.min would overflow sparsemax's cumulative sums to -inf/NaN
        scores = scores.masked_fill(mask == 0, -1e6)
        if self.normaliser == "sparsemax":
            from entmax import sparsemax
            a = sparsemax(scores.float(), dim=-1)
        elif self.normaliser == "entmax15":
            from entmax import entmax15
            a = entmax15(scores.float(), dim=-1)
        else:
            a = torch.softmax(scores.float(), dim=-1)
        a = a * mask  # all-masked rows -> exactly zero
        return a.to(scores.dtype)

    def forward(self, z, facets, fmask, tmask, prior=None):
        """z [B, n, d]; facets [B, T, K, D]; fmask [B, T, K]; tmask [B, T]; prior [B, G] (with a gain) ->
        (change over the prior [B, n, G], α [B, n, T, H, K])."""
        B, n, _ = z.shape
        T, K = facets.shape[1], facets.shape[2]
        h = self.querier(z)
        q = self.q_norm(torch.relu(self.W_Q(h))).view(B, n, self.heads, self.attn_dim)
        k = self.W_K(facets).view(B, T, K, self.heads, self.attn_dim)
        v = self.W_V(facets).view(B, T, K, self.heads, self.attn_dim)
        scores = torch.einsum("bnha,btkha->bnthk", q, k) / math.sqrt(self.attn_dim)
        m = fmask[:, None, :, None, :].expand(B, n, T, self.heads, K)
        alpha = self.normalise(scores, m)
        e = torch.einsum("bnthk,btkha->bntha", alpha, v).reshape(B, n, T, -1)
        known = (fmask.sum(-1) > 0)[:, None, :, None]
        e = torch.where(known, e, self.unknown.expand_as(e))
        qf = q.reshape(B, n, 1, -1).expand(B, n, T, -1)
        d_t = self.shift(torch.cat([e, qf], dim=-1)) * tmask[:, None, :, None]
        delta = d_t.sum(dim=2)
        two = (tmask.sum(-1) >= 2).to(delta.dtype)[:, None, None]
        e_sum = (e * tmask[:, None, :, None]).sum(dim=2)
        delta = delta + two * self.interact(torch.cat([e_sum, q.reshape(B, n, -1)], dim=-1))
        if self.residual in ("gain", "gain_facets"):  # the state's (and facets') gain on the prior only
            change = torch.zeros(B, n, self.readout.out_features, dtype=h.dtype, device=h.device)
            if self.residual == "gain":  # the state alone: it cannot memorise a target
                e_sum = torch.zeros_like(e_sum)
        else:
            change = self.decoder(h + delta) - self.decoder(h) + self.readout(e_sum)
        if self.gain_dim and prior is not None:
            g = self.gain(torch.cat([h, e_sum], dim=-1))  # [B, n, k]
            p_lat = prior.to(change.dtype) @ self.comps  # [B, k]
            change = change + (g * p_lat[:, None, :]) @ self.comps.T + prior[:, None, :].to(change.dtype) * self.gene_gain(h)
        return change, alpha

    def loss(self, b: GroupBatch, *, comps: torch.Tensor, dist_loss: str, dist_weight: float,
             attn_sparsity: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Pseudobulk-change MSE (of the residual over the prior) + distribution distance of predicted and observed
        perturbed cells in PCA space (``comps`` [G, k]) + the attention's Gini impurity."""
        change, alpha = self(b.zq, b.facets, b.fmask, b.tmask, b.prior)
        mse = ((change.mean(1) - b.delta) ** 2).mean()
        loss = mse
        parts = {"delta_mse": float(mse.detach())}
        if dist_loss != "none" and dist_weight > 0:
            pred = b.zc + (change + b.prior[:, None, :]) @ comps
            dist = torch.stack([(mmd_rbf if dist_loss == "mmd" else energy_distance)(pred[i], b.zp[i])
                                for i in range(pred.shape[0])]).mean()
            loss = loss + dist_weight * dist
            parts["dist"] = float(dist.detach())
        if attn_sparsity > 0:
            gini = (1 - (alpha ** 2).sum(-1))
            valid = (b.fmask.sum(-1) > 0)[:, None, :, None].expand_as(gini).to(gini.dtype)
            pen = (gini * valid).sum() / valid.sum().clamp(min=1)
            loss = loss + attn_sparsity * pen
            parts["attn_gini"] = float(pen.detach())
        return loss, parts

    def scaled_residual_errors(self, b: GroupBatch, scales: tuple[float, ...]) -> np.ndarray:
        """Per group and per scale γ: MSE of γ × the mean predicted change against the observed residual [B, S]."""
        with torch.no_grad():
            change, _ = self(b.zq, b.facets, b.fmask, b.tmask, b.prior)
            c = change.mean(1).float()
            d = b.delta.float()
            return np.stack([((g * c - d) ** 2).mean(-1).cpu().numpy() for g in scales], axis=1)

    def residual_mse(self, b: GroupBatch) -> float:
        """Validation: MSE of the mean predicted change against the observed residual (no gradient)."""
        with torch.no_grad():
            change, _ = self(b.zq, b.facets, b.fmask, b.tmask, b.prior)
            return float(((change.mean(1) - b.delta) ** 2).mean())


class LabelAttention(nn.Module):
    """The labels task's head (:class:`pertpipe.models.dygenept_labels.AttentionLearner`): z(p, line) = attention of
    the line's H queries over p's facets (+ a linear path of p's pooled facets); logit(p, line, g) = z · u_g + b_g +
    strength(z), for DE and direction, plus a weighted sum of ``n_priors`` baselines' scores (logit scale).
    ``basis``: the free gene vectors' start (the training labels' leading right singular vectors), else zeros."""

    def __init__(self, D: int, K: int, G: int, n_lines: int, gene_feats: np.ndarray, p, n_priors: int = 0,
                 basis: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        h, H, hidden = p.attn_dim, p.label_heads, p.label_hidden
        self.h, self.H, self.n_priors = h, H, n_priors
        self.key = nn.Linear(D, h)
        self.value = nn.Linear(D, h)
        self.facet = nn.Parameter(torch.zeros(K, h))
        self.query = nn.Parameter(torch.randn(n_lines, H, h) * 0.1)
        self.mix = nn.Linear(H * h, hidden)
        self.pool = nn.Linear(D, hidden)
        self.drop = nn.Dropout(p.label_dropout)
        self.register_buffer("gene_feats", torch.as_tensor(gene_feats, dtype=torch.float32))
        self.gene_in = nn.ModuleDict({k: nn.Linear(D, hidden) for k in ("de", "dir")})
        self.gene_free = nn.ParameterDict({k: nn.Parameter(
            torch.as_tensor(basis[k], dtype=torch.float32) if basis else torch.zeros(G, hidden))
            for k in ("de", "dir")})
        self.gene_bias = nn.ParameterDict({k: nn.Parameter(torch.zeros(G)) for k in ("de", "dir")})
        self.strength = nn.ModuleDict({k: nn.Linear(hidden, 1) for k in ("de", "dir")})
        self.prior_w = nn.ParameterDict({k: nn.Parameter(torch.ones(n_priors)) for k in ("de", "dir")})

    def embed(self, T: torch.Tensor, M: torch.Tensor, line: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, H = self.h, self.H
        k = self.key(T) + self.facet  # [B, K, h]
        v = self.value(T)
        q = self.query[line]  # [B, H, h]
        s = torch.einsum("bhd,bkd->bhk", q, k) / h ** 0.5
        s = s.masked_fill(M[:, None, :] <= 0, -1e4)
        a = torch.softmax(s, dim=-1) * (M.sum(1) > 0).float()[:, None, None]
        c = torch.einsum("bhk,bkd->bhd", a, v).reshape(len(T), H * h)
        pooled = (T * M[..., None]).sum(1) / M.sum(1, keepdim=True).clamp(min=1)
        z = self.drop(torch.nn.functional.gelu(self.mix(c) + self.pool(pooled)))
        return z, a

    def forward(self, T: torch.Tensor, M: torch.Tensor, line: torch.Tensor,
                priors: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        z, a = self.embed(T, M, line)
        out = {}
        for kind in ("de", "dir"):
            u = self.gene_in[kind](self.gene_feats) + self.gene_free[kind]  # [G, hidden]
            out[kind] = z @ u.T + self.gene_bias[kind] + self.strength[kind](z)
            if self.n_priors:  # a residual over the baselines' scores (logit scale) [B, n_priors, G]
                out[kind] = out[kind] + torch.einsum("bpg,p->bg", priors[kind], self.prior_w[kind])
        return out, a
