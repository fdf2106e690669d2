"""The CFM-VC network: a VAE (NB, or hurdle/Gaussian on log1p), context and perturbation encoders and the flow;
the likelihoods as ``torch.distributions`` and the module's losses (VAE, flow matching), plus ODE integration.

See :mod:`pertpipe.models.cfmvc` for the model as a whole. Index 0 of every embedding is "unknown".
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Normal, constraints, kl_divergence, register_kl

from pertpipe.core.distances import mmd_rbf
from pertpipe.core.layers import mlp
from pertpipe.models.facet_lookup import MAX_TARGETS

_EPS = 1e-8


# -- likelihoods ------------------------------------------------------------------------------------------
class NegativeBinomialMu(Distribution):
    """NB with mean ``mu`` and inverse dispersion ``theta`` (scipy: nbinom(n=theta, p=theta/(theta+mu)));
    sampled as the gamma-Poisson mixture of the same parameters."""

    arg_constraints = {"mu": constraints.nonnegative, "theta": constraints.positive}
    support = constraints.nonnegative_integer

    def __init__(self, mu: torch.Tensor, theta: torch.Tensor) -> None:
        self.mu, self.theta = mu.float(), theta.float()
        super().__init__(batch_shape=torch.broadcast_shapes(self.mu.shape, self.theta.shape), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.mu.expand(self.batch_shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x, mu, theta = x.float(), self.mu, self.theta
        log_theta_mu = torch.log(theta + mu + _EPS)
        return (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
                + theta * (torch.log(theta + _EPS) - log_theta_mu) + x * (torch.log(mu + _EPS) - log_theta_mu))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            rate = torch.distributions.Gamma(self.theta.expand(self.batch_shape),
                                             (self.theta / (self.mu + _EPS)).expand(self.batch_shape))
            return torch.poisson(rate.sample(sample_shape))


class NormalLogVar(Normal):
    """A Normal parametrised by its log-variance (what the networks output), log_prob written in that form."""

    def __init__(self, loc: torch.Tensor, log_var: torch.Tensor) -> None:
        self.log_var = log_var.float()
        super().__init__(loc.float(), (0.5 * self.log_var).exp(), validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (math.log(2 * math.pi) + self.log_var + (x.float() - self.loc) ** 2 / self.log_var.exp())


@register_kl(NormalLogVar, Normal)
def _kl_logvar_standard(p: NormalLogVar, q: Normal) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, 1)) in closed form (q must be the standard normal)."""
    return 0.5 * (p.loc ** 2 + p.log_var.exp() - p.log_var - 1)


class Hurdle(Distribution):
    """Sparse log1p data: P(x > 0) = sigmoid(logit_nz), and x | x > 0 ~ N(loc, exp(log_var))."""

    arg_constraints = {"logit_nz": constraints.real, "loc": constraints.real}
    support = constraints.real

    def __init__(self, logit_nz: torch.Tensor, loc: torch.Tensor, log_var: torch.Tensor) -> None:
        self.logit_nz, self.nonzero = logit_nz.float(), NormalLogVar(loc, log_var)
        super().__init__(batch_shape=torch.broadcast_shapes(self.logit_nz.shape, loc.shape), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logit_nz) * self.nonzero.loc.clamp(min=0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return torch.where(x > 0, F.logsigmoid(self.logit_nz) + self.nonzero.log_prob(x), F.logsigmoid(-self.logit_nz))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            nz = torch.bernoulli(torch.sigmoid(self.logit_nz).expand(sample_shape + self.batch_shape))
            return nz * self.nonzero.sample(sample_shape).clamp(min=0)


def _block_mlp(i: int, h: int, o: int) -> nn.Sequential:
    """CFM-VC's MLP: two LayerNorm + SiLU hidden layers."""
    return mlp(i, h, o, activation="silu", hidden_layers=2, norm=True)


# -- networks ---------------------------------------------------------------------------------------------
class VAE(nn.Module):
    """Encoders for z_int (sees the cell type) and z_tech (sees the batch); decoder to the likelihood's parameters."""

    def __init__(self, n_genes: int, n_batches: int, n_cell_types: int, p: Any, likelihood: str) -> None:
        super().__init__()
        e = p.emb_dim
        self.likelihood = likelihood
        self.batch_emb = nn.Embedding(n_batches + 1, e)
        self.ct_emb = nn.Embedding(n_cell_types + 1, e)
        self.enc_int = _block_mlp(n_genes + e, p.hidden, 2 * p.d_int)
        self.enc_tech = _block_mlp(n_genes + e, max(16, p.hidden // 2), 2 * p.d_tech)
        # NB: logits; gaussian: means; hurdle: [non-zero logits, means of the non-zero part]
        self.dec = _block_mlp(p.d_int + p.d_tech + e, p.hidden, n_genes * (2 if likelihood == "hurdle" else 1))
        self.log_theta = nn.Parameter(torch.full((n_genes,), 1.0))  # NB: θ = exp(.) per gene
        self.log_var = nn.Parameter(torch.full((n_genes,), -1.0))  # log1p fallbacks: per-gene variance

    def encode(self, x_in, b, ct):
        mi, li = self.enc_int(torch.cat([x_in, self.ct_emb(ct)], -1)).chunk(2, -1)
        mt, lt = self.enc_tech(torch.cat([x_in, self.batch_emb(b)], -1)).chunk(2, -1)
        return mi, li.clamp(-8, 8), mt, lt.clamp(-8, 8)

    def decode(self, z_int, z_tech, b):
        return self.dec(torch.cat([z_int, z_tech, self.batch_emb(b)], -1))

    def distribution(self, out: torch.Tensor, lib: torch.Tensor | None = None) -> Distribution:
        """The likelihood of the data given decoder output ``out`` (NB: at library size ``lib``)."""
        if self.likelihood == "nb":
            return NegativeBinomialMu(torch.softmax(out.float(), -1) * lib[:, None], self.log_theta.exp())
        if self.likelihood == "hurdle":
            logit_nz, mean = out.chunk(2, -1)
            return Hurdle(logit_nz, mean.float(), self.log_var)
        return NormalLogVar(out, self.log_var)

    def loss(self, x_in, target, lib, b, ct, *, beta: float, gen: torch.Generator | None = None,
             sample: bool = True, noise: tuple[torch.Tensor, torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(-ELBO per gene, reconstruction NLL per gene, KL per gene); ``sample=False`` decodes the posterior means.
        ``noise``: the reparameterisation's standard normals (z_int, z_tech), drawn by the caller; else from ``gen``."""
        mi, li, mt, lt = self.encode(x_in, b, ct)
        if sample:
            ei, et = noise if noise is not None else (torch.randn(mi.shape, generator=gen),
                                                      torch.randn(mt.shape, generator=gen))
            zi = mi + ei.to(mi.device) * (0.5 * li).exp()
            zt = mt + et.to(mt.device) * (0.5 * lt).exp()
        else:
            zi, zt = mi, mt
        ll = self.distribution(self.decode(zi, zt, b), lib).log_prob(target)
        G = target.shape[1]
        recon = -ll.sum(-1).mean() / G
        prior = Normal(torch.zeros((), device=mi.device), torch.ones((), device=mi.device))
        kl = (kl_divergence(NormalLogVar(mi, li), prior).sum(-1)
              + kl_divergence(NormalLogVar(mt, lt), prior).sum(-1)).mean() / G
        return recon + beta * kl, recon, kl


class Context(nn.Module):
    """Batch, cell type and (optionally) spatial coordinates -> c."""

    def __init__(self, n_batches: int, n_cell_types: int, spatial_dim: int, p: Any) -> None:
        super().__init__()
        e = p.emb_dim
        self.batch_emb = nn.Embedding(n_batches + 1, e)
        self.ct_emb = nn.Embedding(n_cell_types + 1, e)
        self.spatial = nn.Linear(spatial_dim, e) if spatial_dim else None
        self.out = _block_mlp(e * (3 if spatial_dim else 2), p.flow_hidden, p.c_dim)

    def forward(self, b, ct, xy=None):
        parts = [self.batch_emb(b), self.ct_emb(ct)]
        if self.spatial is not None:
            parts.append(self.spatial(xy))
        return self.out(torch.cat(parts, -1))


class Perturbation(nn.Module):
    """Facets pooled by masked attention + a learned embedding of genes seen as targets -> p."""

    def __init__(self, facet_dim: int, n_seen: int, p: Any) -> None:
        super().__init__()
        self.score = nn.Linear(facet_dim, 1)
        self.proj = nn.Linear(facet_dim, p.p_dim)
        self.unknown = nn.Parameter(torch.zeros(p.p_dim))
        self.seen = nn.Embedding(n_seen + 1, p.p_dim, padding_idx=0)
        with torch.no_grad():
            self.seen.weight.normal_(0, 0.02)
            self.seen.weight[0].zero_()
        self.combine = _block_mlp(p.p_dim + MAX_TARGETS + 1, p.flow_hidden, p.p_dim)

    def forward(self, facets, fmask, slots, seen_idx, keep_seen=None):
        """facets [B, T, K, D], fmask [B, T, K], slots [B, T], seen_idx [B, T] -> [B, p_dim]."""
        s = self.score(facets).squeeze(-1).masked_fill(fmask == 0, -1e4)
        a = torch.softmax(s.float(), -1).to(facets.dtype) * fmask
        g = self.proj(torch.einsum("btk,btkd->btd", a, facets))
        known = (fmask.sum(-1) > 0)[..., None]
        g = torch.where(known, g, self.unknown.expand_as(g))
        learned = self.seen(seen_idx)
        if keep_seen is not None:
            learned = learned * keep_seen[..., None]
        g = (g + learned) * slots[..., None]
        n_t = nn.functional.one_hot(slots.sum(-1).long(), MAX_TARGETS + 1).to(g.dtype)
        return self.combine(torch.cat([g.sum(1), n_t], -1))


class Flow(nn.Module):
    """v(z_t, t | p, c) = base(h) + Σ_j α_j(p, c) basis_j(h), h = trunk([z_t, time embedding, c])."""

    def __init__(self, p: Any) -> None:
        super().__init__()
        self.n_basis, self.d = p.n_basis, p.d_int
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000.0), 16)))
        self.time = nn.Sequential(nn.Linear(32, p.flow_hidden), nn.SiLU())
        self.trunk = _block_mlp(p.d_int + p.flow_hidden + p.c_dim, p.flow_hidden, p.flow_hidden)
        self.base = nn.Linear(p.flow_hidden, p.d_int)
        self.basis = nn.Linear(p.flow_hidden, p.n_basis * p.d_int)
        self.alpha = _block_mlp(p.p_dim + p.c_dim, p.flow_hidden, p.n_basis)

    def forward(self, z, t, c, pe):
        """z [N, d], t [N, 1], c [N, c_dim], pe [N, p_dim] -> velocity [N, d]."""
        tt = t * self.freqs
        h = self.trunk(torch.cat([z, self.time(torch.cat([tt.sin(), tt.cos()], -1)), c], -1))
        basis = self.basis(h).view(-1, self.n_basis, self.d)
        return self.base(h) + torch.einsum("nb,nbd->nd", self.alpha(torch.cat([pe, c], -1)), basis)


class CFMVCModule(nn.Module):
    """``.vae``, ``.context``, ``.pert``, ``.flow``; the flow-matching loss and the ODE integration."""

    def __init__(self, n_genes: int, n_batches: int, n_cell_types: int, spatial_dim: int, facet_dim: int,
                 n_seen: int, p: Any, likelihood: str = "nb") -> None:
        super().__init__()
        self.vae = VAE(n_genes, n_batches, n_cell_types, p, likelihood)
        self.context = Context(n_batches, n_cell_types, spatial_dim, p)
        self.pert = Perturbation(facet_dim, n_seen, p)
        self.flow = Flow(p)

    def integrate(self, z0, c, pe, n_steps: int, solver: str):
        """Integrate dz/dt = v(z, t | p, c) from t=0 to 1 with ``n_steps`` Euler or midpoint steps."""
        z, dt = z0, 1.0 / n_steps
        for i in range(n_steps):
            t = torch.full((z.shape[0], 1), i * dt, device=z.device, dtype=z.dtype)
            k = self.flow(z, t, c, pe)
            if solver == "midpoint":
                k = self.flow(z + 0.5 * dt * k, t + 0.5 * dt, c, pe)
            z = z + dt * k
        return z

    def flow_loss(self, z0, z1, c, pe, t, *, group_size: int, mmd_weight: float = 0.0,
                  mmd_steps: int = 4) -> tuple[torch.Tensor, dict[str, float]]:
        """Conditional flow matching on the straight path (+ optional MMD between generated and target latents
        per group of ``group_size`` consecutive rows)."""
        v = self.flow((1 - t) * z0 + t * z1, t, c, pe)
        loss = ((v.float() - (z1 - z0).float()) ** 2).mean()
        parts = {"cfm_mse": float(loss.detach())}
        if mmd_weight > 0:
            k = group_size
            zhat = self.integrate(z0, c, pe, mmd_steps, "euler")
            mmd = torch.stack([mmd_rbf(zhat[i * k:(i + 1) * k].float(), z1[i * k:(i + 1) * k].float())
                               for i in range(z0.shape[0] // k)]).mean()
            loss = loss + mmd_weight * mmd
            parts["mmd"] = float(mmd.detach())
        return loss, parts
