"""CFM-VC: an NB-VAE latent space plus conditional flow matching from control to perturbed cells.

Network (built by :func:`build_cfmvc`; the user-facing class is :class:`CFMVCModel`):

* **NB-VAE** (scVI style, in torch): the encoder reads log1p of the raw counts with a cell-type embedding for
  the biological block z_int and a batch embedding for the technical block z_tech (both reparameterised, KL to
  N(0, I)); the decoder maps [z_int, z_tech, batch] to per-gene logits -> NB mean softmax(logits) × observed
  library size, with a learned per-gene inverse dispersion θ. **Data without counts** (log1p only, e.g. the Norman
  subset): the encoder reads the log1p matrix and the likelihood is on log1p itself, either a **hurdle** (the
  default fallback: P(x > 0) from one decoder head, x | x > 0 Gaussian with a per-gene variance, which keeps the
  zeros of sparse data) or a plain **Gaussian** (``likelihood: gaussian``). ``likelihood: auto`` picks NB when
  ``layers["counts"]`` exists and ``log1p_fallback`` otherwise.
* **Context encoder** c: batch, cell type and, when the training file has ``obsm["spatial"]``, the (standardised)
  coordinates. **Perturbation encoder** p: each target gene's facet vectors pooled by a learned masked attention
  (so unseen targets get an embedding from their texts), plus a learned per-gene embedding for genes seen as
  targets in training (dropped at rate ``target_dropout`` so the facet path carries weight); a double sums its
  two genes and an MLP (which also sees the number of targets) combines them.
* **Flow field** v(z_t, t | p, c) = base(h) + Σ_j α_j(p, c) · basis_j(h), h = trunk([z_t, time embedding, c]).
* **Conditional flow matching** on the straight path z_t = (1 - t) z_0 + t z_1 with target z_1 - z_0, in the
  standardised z_int space. Source z_0: Gaussian noise (``source: gaussian``) or encoded control cells of the same
  cell type (``source: control``); mini-batch OT pairing (exact assignment per group) with ``ot_pairing``.
* **Sampling**: Euler or midpoint integration with ``n_steps``; decode with the control cell's z_tech and batch.
  ``decode: sample`` draws NB counts at the control cell's library size, library-normalises them to the training
  target sum and takes log1p (log1p fallbacks: draws from the hurdle/Gaussian); ``mean`` uses the decoder's mean;
  ``delta`` adds the decoded change mean(z_1) - mean(z_ctrl) to the drawn control cell. ``auto`` (default) is
  ``delta`` for NB models and ``sample`` for the log1p fallbacks: the choice the model benchmark supports.

Training (each stage on the shared loop of :mod:`pertpipe.models.training`, each with its own resumable
checkpoint): 1) the VAE; 2) the context/perturbation encoders and the flow on the VAE's detached latents, with an
optional MMD between generated and encoded latents; 3) optionally a joint fine-tune at ``joint_lr_scale``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import CONTROL_LABEL, perturbation_genes
from pertpipe.data.h5io import DEFAULT_CHUNK, H5adReader
from pertpipe.errors import ConfigError, ContractError
from pertpipe.io import pick_device
from pertpipe.models.base import ControlCells, PerturbationModel, register_model
from pertpipe.models.distances import energy_distance, mmd_rbf
from pertpipe.models.facet_lookup import MAX_TARGETS, FacetLookup
from pertpipe.models.params import fraction, positive
from pertpipe.models.shrinkage import check_setting as check_shrinkage
from pertpipe.models.shrinkage import fit_shrinkage
from pertpipe.models.training import TrainConfig, epoch_generator, stage_checkpoint, train, validation_targets




# -- likelihoods ------------------------------------------------------------------------------------------
def nb_log_likelihood(x, mu, theta, eps: float = 1e-8):
    """log NB(x; mean mu, inverse dispersion theta), elementwise (scipy: nbinom(n=theta, p=theta/(theta+mu)))."""
    import torch

    x, mu, theta = x.float(), mu.float(), theta.float()
    log_theta_mu = torch.log(theta + mu + eps)
    return (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
            + theta * (torch.log(theta + eps) - log_theta_mu) + x * (torch.log(mu + eps) - log_theta_mu))


def gaussian_log_likelihood(x, mean, log_var):
    """log N(x; mean, exp(log_var)), elementwise (the fallback for log1p-only data)."""
    x, mean, log_var = x.float(), mean.float(), log_var.float()
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / log_var.exp())


def hurdle_log_likelihood(x, logit_nz, mean, log_var):
    """log-likelihood of sparse log1p data: P(x > 0) = sigmoid(logit_nz), and x | x > 0 ~ N(mean, exp(log_var))."""
    import torch
    import torch.nn.functional as F

    x, logit_nz = x.float(), logit_nz.float()
    return torch.where(x > 0, F.logsigmoid(logit_nz) + gaussian_log_likelihood(x, mean, log_var),
                       F.logsigmoid(-logit_nz))


def kl_normal(mu, log_var):
    """KL(N(mu, exp(log_var)) || N(0, I)) summed over the last axis."""
    return 0.5 * (mu.float() ** 2 + log_var.float().exp() - log_var.float() - 1).sum(-1)


# -- network ----------------------------------------------------------------------------------------------
def build_cfmvc(n_genes: int, n_batches: int, n_cell_types: int, spatial_dim: int, facet_dim: int, n_seen: int,
                p: CFMVCModel.Params, likelihood: str = "nb"):
    """The CFM-VC torch module: ``.vae``, ``.context``, ``.pert``, ``.flow`` (index 0 of every embedding = unknown)."""
    import torch
    from torch import nn

    def mlp(i, h, o):
        return nn.Sequential(nn.Linear(i, h), nn.LayerNorm(h), nn.SiLU(), nn.Linear(h, h), nn.LayerNorm(h),
                             nn.SiLU(), nn.Linear(h, o))

    e = p.emb_dim

    class VAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.batch_emb = nn.Embedding(n_batches + 1, e)
            self.ct_emb = nn.Embedding(n_cell_types + 1, e)
            self.enc_int = mlp(n_genes + e, p.hidden, 2 * p.d_int)
            self.enc_tech = mlp(n_genes + e, max(16, p.hidden // 2), 2 * p.d_tech)
            # NB: logits; gaussian: means; hurdle: [non-zero logits, means of the non-zero part]
            self.dec = mlp(p.d_int + p.d_tech + e, p.hidden, n_genes * (2 if likelihood == "hurdle" else 1))
            self.log_theta = nn.Parameter(torch.full((n_genes,), 1.0))  # NB: θ = exp(.) per gene
            self.log_var = nn.Parameter(torch.full((n_genes,), -1.0))  # log1p fallbacks: per-gene variance

        def encode(self, x_in, b, ct):
            mi, li = self.enc_int(torch.cat([x_in, self.ct_emb(ct)], -1)).chunk(2, -1)
            mt, lt = self.enc_tech(torch.cat([x_in, self.batch_emb(b)], -1)).chunk(2, -1)
            return mi, li.clamp(-8, 8), mt, lt.clamp(-8, 8)

        def decode(self, z_int, z_tech, b):
            return self.dec(torch.cat([z_int, z_tech, self.batch_emb(b)], -1))

    class Context(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.batch_emb = nn.Embedding(n_batches + 1, e)
            self.ct_emb = nn.Embedding(n_cell_types + 1, e)
            self.spatial = nn.Linear(spatial_dim, e) if spatial_dim else None
            self.out = mlp(e * (3 if spatial_dim else 2), p.flow_hidden, p.c_dim)

        def forward(self, b, ct, xy=None):
            parts = [self.batch_emb(b), self.ct_emb(ct)]
            if self.spatial is not None:
                parts.append(self.spatial(xy))
            return self.out(torch.cat(parts, -1))

    class Perturbation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.score = nn.Linear(facet_dim, 1)
            self.proj = nn.Linear(facet_dim, p.p_dim)
            self.unknown = nn.Parameter(torch.zeros(p.p_dim))
            self.seen = nn.Embedding(n_seen + 1, p.p_dim, padding_idx=0)
            with torch.no_grad():
                self.seen.weight.normal_(0, 0.02)
                self.seen.weight[0].zero_()
            self.combine = mlp(p.p_dim + MAX_TARGETS + 1, p.flow_hidden, p.p_dim)

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
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000.0), 16)))
            self.time = nn.Sequential(nn.Linear(32, p.flow_hidden), nn.SiLU())
            self.trunk = mlp(p.d_int + p.flow_hidden + p.c_dim, p.flow_hidden, p.flow_hidden)
            self.base = nn.Linear(p.flow_hidden, p.d_int)
            self.basis = nn.Linear(p.flow_hidden, p.n_basis * p.d_int)
            self.alpha = mlp(p.p_dim + p.c_dim, p.flow_hidden, p.n_basis)

        def forward(self, z, t, c, pe):
            """z [N, d], t [N, 1], c [N, c_dim], pe [N, p_dim] -> velocity [N, d]."""
            tt = t * self.freqs
            h = self.trunk(torch.cat([z, self.time(torch.cat([tt.sin(), tt.cos()], -1)), c], -1))
            basis = self.basis(h).view(-1, p.n_basis, p.d_int)
            return self.base(h) + torch.einsum("nb,nbd->nd", self.alpha(torch.cat([pe, c], -1)), basis)

    class CFMVCNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae, self.context, self.pert, self.flow = VAE(), Context(), Perturbation(), Flow()

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

    return CFMVCNet()


# -- the model --------------------------------------------------------------------------------------------
@dataclass
class _Data:
    """The kept training cells: encoder input, reconstruction target, library sizes and context indices."""

    enc_in: sp.csr_matrix
    target: sp.csr_matrix
    lib: np.ndarray
    b: np.ndarray
    ct: np.ndarray
    xy: np.ndarray | None
    obs: pd.DataFrame


@register_model("cfmvc")
class CFMVCModel(PerturbationModel):
    needs_knowledge = True
    uses_counts = True
    uses_spatial = True

    @dataclass
    class Params:
        likelihood: Literal["auto", "nb", "hurdle", "gaussian"] = "auto"  # auto: nb when layers["counts"] exists
        log1p_fallback: Literal["hurdle", "gaussian"] = "hurdle"  # what auto picks for log1p-only data
        d_int: int = positive(16)
        d_tech: int = positive(4)
        hidden: int = positive(128)
        emb_dim: int = positive(8)
        kl_weight: float = field(default=1.0, metadata={"ge": 0})
        kl_warmup_epochs: int = field(default=5, metadata={"ge": 0})
        context_dropout: float = fraction(0.05)  # training: cell type / batch replaced by "unknown" at this rate
        vae_epochs: int = positive(60)
        vae_batch: int = positive(256)
        flow_epochs: int = positive(40)
        flow_hidden: int = positive(128)
        c_dim: int = positive(16)
        p_dim: int = positive(32)
        n_basis: int = positive(8)
        groups_per_step: int = positive(16)
        cells_per_group: int = positive(32)
        source: Literal["gaussian", "control"] = "gaussian"  # the benchmark's pick: see README
        ot_pairing: bool = True
        target_dropout: float = fraction(0.3)
        mmd_weight: float = field(default=0.0, metadata={"ge": 0})
        mmd_steps: int = positive(4)
        joint_epochs: int = field(default=0, metadata={"ge": 0})
        joint_lr_scale: float = field(default=0.1, metadata={"gt": 0})
        n_steps: int = positive(20)
        solver: Literal["euler", "midpoint"] = "midpoint"
        decode: Literal["auto", "sample", "mean", "delta"] = "auto"  # auto: delta for NB, sample for log1p data
        steps_per_epoch: int = positive(20)
        lr: float = field(default=1e-3, metadata={"gt": 0})
        weight_decay: float = field(default=1e-4, metadata={"ge": 0})
        warmup_epochs: int = field(default=2, metadata={"ge": 0})
        patience: int = positive(10)
        checkpoint_every: int = positive(1)
        amp: bool = True
        val_fraction: float = fraction(0.15)
        max_cells: int = positive(100_000)
        use_spatial: bool = True
        device: Literal["auto", "cpu", "cuda"] = "auto"
        gpu: bool = False  # request a GPU from the scheduler (Snakemake resources)
        shrinkage: Any = "auto"  # auto | none | λ in [0, 1]: toward the training mean shift (models.shrinkage)

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self._check()  # at config time: Snakemake builds every configured model while parsing

    # -- configuration ------------------------------------------------------------------------------------
    def _check(self) -> None:
        """What the typed Params cannot say (types, choices and bounds are checked by build_model)."""
        check_shrinkage(self.params.shrinkage, model="cfmvc")

    # -- data -----------------------------------------------------------------------------------------------
    def _read(self, train_path: str | os.PathLike, rng: np.random.Generator, chunk_size: int) -> _Data:
        p = self.params
        with H5adReader(train_path) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str).reset_index(drop=True)
            self.genes = [str(g) for g in r.var_names]
            has_counts = "counts" in r.layers()
            if p.likelihood == "nb" and not has_counts:
                raise ContractError(train_path, "layers['counts']", "model_params.cfmvc.likelihood is 'nb' but the "
                                    "training split has no raw counts", "set likelihood: auto (the hurdle model "
                                    "on log1p, for log1p-only data) or give stage 1 a source with counts")
            self.likelihood = p.likelihood if p.likelihood != "auto" else ("nb" if has_counts else p.log1p_fallback)
            self.target_sum = float(((r.uns().get("pertpipe") or {}).get("standardize") or {}).get("target_sum", 1e4))
            keep = np.zeros(r.n_obs, bool)
            keep[rng.choice(r.n_obs, size=min(r.n_obs, p.max_cells), replace=False)] = True
            if self.likelihood == "nb":  # (X itself is not needed: memory = two CSR copies of the kept counts)
                counts = r.read_masked(keep, layer="counts", chunk_size=chunk_size)
                counts = counts.tocsr().astype(np.float32)
                enc_in, target = counts.log1p(), counts
                lib = np.asarray(counts.sum(1)).ravel()
            else:
                x = r.read_masked(keep, chunk_size=chunk_size).astype(np.float32)
                enc_in, target, lib = x, x, np.asarray(x.sum(1)).ravel()
            xy = None
            if p.use_spatial and "spatial" in r.obsm_keys():
                xy = r.obsm("spatial")[keep].astype(np.float64)
                self.xy_mean, self.xy_std = xy.mean(0), xy.std(0) + 1e-8
                xy = ((xy - self.xy_mean) / self.xy_std).astype(np.float32)
        obs = obs[keep].reset_index(drop=True)
        self.batches = sorted(obs.batch.unique())
        self.cell_types = sorted(obs.cell_type.unique())
        self.spatial_dim = 0 if xy is None else int(xy.shape[1])
        b = np.array([self._index(self.batches, v) for v in obs.batch], np.int64)
        ct = np.array([self._index(self.cell_types, v) for v in obs.cell_type], np.int64)
        return _Data(enc_in.tocsr(), target.tocsr(), lib.astype(np.float32), b, ct, xy, obs)

    @staticmethod
    def _index(cats: list[str], value: str) -> int:
        """1-based category index; 0 = not seen in training (the learned 'unknown' embedding)."""
        i = int(np.searchsorted(cats, value))
        return i + 1 if i < len(cats) and cats[i] == value else 0

    def _target_arrays(self, label: str) -> tuple[np.ndarray, ...]:
        f, m, t = self.lookup.target(label)
        s = np.zeros(MAX_TARGETS, np.int64)
        for j, g in enumerate(perturbation_genes(label)[:MAX_TARGETS]):
            s[j] = self.seen.get(g, 0)
        return f, m, t, s

    # -- training -------------------------------------------------------------------------------------------
    def fit(self, train_path: str | os.PathLike, knowledge: Any | None = None,
            config: dict[str, Any] | None = None) -> dict[str, Any]:
        import torch

        self._check()
        if knowledge is None:
            raise ConfigError("cfmvc needs the facet tensor (knowledge stage: facet_embeddings.pt)")
        config = dict(config or {})
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.lookup = FacetLookup.load(knowledge)
        d = self._read(train_path, rng, config.get("chunk_size", DEFAULT_CHUNK))
        self.device = dev = pick_device(p.device, field="model_params.cfmvc.device")
        n = len(d.obs)
        is_ctrl = (d.obs.target_gene == CONTROL_LABEL).to_numpy()
        if not is_ctrl.any():
            raise ContractError(train_path, "obs['target_gene']", "no control cells in the training split",
                                "cfmvc starts from control cells; check stage1.split.control_val_fraction")
        obs = d.obs
        ctrl_by_ct = {c: np.flatnonzero((is_ctrl & (obs.cell_type == c)).to_numpy()) for c in self.cell_types}
        groups = []
        for (t, c), idx in obs.groupby(["target_gene", "cell_type"]).indices.items():
            if len(idx) >= 3 and len(ctrl_by_ct.get(c, [])) >= 3:
                groups.append((t, c, np.asarray(idx)))
        targets = sorted({g[0] for g in groups if g[0] != CONTROL_LABEL})
        val_targets = validation_targets(targets, p.val_fraction, rng, model="cfmvc", path=train_path)
        fit_groups = [g for g in groups if g[0] not in val_targets]
        val_groups = [g for g in groups if g[0] in val_targets]
        # the learned per-gene embedding covers genes targeted in the fitted groups (not the validation targets)
        seen = sorted({g for t, _c, _i in fit_groups for g in perturbation_genes(t)})
        self.seen = {g: i + 1 for i, g in enumerate(seen)}
        self.net = build_cfmvc(len(self.genes), len(self.batches), len(self.cell_types), self.spatial_dim,
                               self.lookup.dim, len(self.seen), p, self.likelihood).to(dev)
        net = self.net
        base_cfg = TrainConfig.from_params(p)
        ckpt = config.get("checkpoint")

        def rows_to(m: sp.csr_matrix, rows: np.ndarray):
            return torch.tensor(m[rows].toarray(), device=dev)

        def ctx_of(rows: np.ndarray, gen=None):
            b, ct = torch.tensor(d.b[rows], device=dev), torch.tensor(d.ct[rows], device=dev)
            if gen is not None and p.context_dropout > 0:  # learn the "unknown" embeddings
                drop = (torch.rand(len(rows), generator=gen) < p.context_dropout).to(dev)
                b, ct = b.masked_fill(drop, 0), ct.masked_fill(drop, 0)
            xy = torch.tensor(d.xy[rows], device=dev) if d.xy is not None else None
            return b, ct, xy

        # ---- stage 1: the VAE ----
        perm = rng.permutation(n)
        n_val_cells = min(2000, max(1, n // 20)) if n >= 200 else 0
        vae_val, vae_fit = perm[:n_val_cells], perm[n_val_cells:]

        def vae_loss(rows, gen, beta, sample=True):
            x_in, tgt = rows_to(d.enc_in, rows), rows_to(d.target, rows)
            b, ct, _ = ctx_of(rows, gen)
            mi, li, mt, lt = net.vae.encode(x_in, b, ct)
            if sample:
                zi = mi + torch.randn(mi.shape, generator=gen).to(dev) * (0.5 * li).exp()
                zt = mt + torch.randn(mt.shape, generator=gen).to(dev) * (0.5 * lt).exp()
            else:
                zi, zt = mi, mt
            out = net.vae.decode(zi, zt, b)
            if self.likelihood == "nb":
                mu = torch.softmax(out.float(), -1) * torch.tensor(d.lib[rows], device=dev)[:, None]
                ll = nb_log_likelihood(tgt, mu, net.vae.log_theta.exp())
            elif self.likelihood == "hurdle":
                logit_nz, mean = out.chunk(2, -1)
                ll = hurdle_log_likelihood(tgt, logit_nz, mean, net.vae.log_var)
            else:
                ll = gaussian_log_likelihood(tgt, out, net.vae.log_var)
            G = tgt.shape[1]
            recon = -ll.sum(-1).mean() / G
            kl = (kl_normal(mi, li) + kl_normal(mt, lt)).mean() / G
            return recon + beta * kl, recon, kl

        def vae_step(gen, epoch):
            rows = vae_fit[torch.randint(len(vae_fit), (p.vae_batch,), generator=gen).numpy()]
            beta = p.kl_weight * min(1.0, (epoch + 1) / max(1, p.kl_warmup_epochs))
            loss, recon, kl = vae_loss(rows, gen, beta)
            return loss, {"recon_nll_per_gene": float(recon.detach()), "kl_per_gene": float(kl.detach())}, len(rows)

        def vae_validate():
            with torch.no_grad():
                return float(vae_loss(vae_val, None, p.kl_weight, sample=False)[1])

        vae_log = train(net.vae, param_groups=[{"params": list(net.vae.parameters())}], step=vae_step,
                        validate=vae_validate if n_val_cells else None, cfg=replace(base_cfg, epochs=p.vae_epochs),
                        seed=self.seed, device=dev, checkpoint=stage_checkpoint(ckpt, "vae"), desc="cfmvc vae")

        # ---- stage 2: flow on detached latents ----
        net.vae.eval()
        Z = self._encode_rows(d, np.arange(n), dev)
        self.z_mean, self.z_std = Z.mean(0), Z.std(0) + 1e-6
        Zs = torch.tensor((Z - self.z_mean) / self.z_std, dtype=torch.float32, device=dev)
        tarr = {g[0]: tuple(torch.tensor(a, device=dev) for a in self._target_arrays(g[0])) for g in groups}
        k = p.cells_per_group

        def flow_batch(sel, gen, latent):
            """z0, z1 (OT-paired per group), context rows and perturbation arrays for groups ``sel``."""
            z0s, z1s, rows1, pa = [], [], [], []
            for t, c, idx in sel:
                r1 = idx[torch.randint(len(idx), (k,), generator=gen).numpy()]
                z1 = latent(r1)
                if p.source == "gaussian":
                    z0 = torch.randn(z1.shape, generator=gen).to(dev)
                else:
                    pool = ctrl_by_ct[c]
                    z0 = latent(pool[torch.randint(len(pool), (k,), generator=gen).numpy()])
                if p.ot_pairing:
                    from scipy.optimize import linear_sum_assignment

                    cost = torch.cdist(z0.detach().float(), z1.detach().float()).pow(2).cpu().numpy()
                    _r, col = linear_sum_assignment(cost)
                    z1, r1 = z1[torch.as_tensor(col, device=dev)], r1[col]
                z0s.append(z0), z1s.append(z1), rows1.append(r1), pa.append(tarr[t])
            rows = np.concatenate(rows1)
            arrays = [torch.stack(a) for a in zip(*pa)]
            return torch.cat(z0s), torch.cat(z1s), rows, arrays

        def pert_embed(arrays, gen, n_rep):
            f, m, s, seen_idx = arrays
            keep = None
            if gen is not None and p.target_dropout > 0:
                keep = (torch.rand(seen_idx.shape, generator=gen) >= p.target_dropout).float().to(dev)
            return net.pert(f, m, s, seen_idx, keep).repeat_interleave(n_rep, 0)

        def flow_loss(sel, gen, latent):
            z0, z1, rows, arrays = flow_batch(sel, gen, latent)
            c = net.context(*ctx_of(rows, gen))
            pe = pert_embed(arrays, gen, k)
            t = torch.rand((z0.shape[0], 1), generator=gen).to(dev)
            v = net.flow((1 - t) * z0 + t * z1, t, c, pe)
            loss = ((v.float() - (z1 - z0).float()) ** 2).mean()
            parts = {"cfm_mse": float(loss.detach())}
            if p.mmd_weight > 0:
                zhat = net.integrate(z0, c, pe, p.mmd_steps, "euler")
                mmd = torch.stack([mmd_rbf(zhat[i * k:(i + 1) * k].float(), z1[i * k:(i + 1) * k].float())
                                   for i in range(len(sel))]).mean()
                loss = loss + p.mmd_weight * mmd
                parts["mmd"] = float(mmd.detach())
            return loss, parts

        def stored(rows):
            return Zs[rows]

        def flow_step(gen, epoch):
            sel = [fit_groups[i] for i in torch.randint(len(fit_groups), (p.groups_per_step,), generator=gen).numpy()]
            loss, parts = flow_loss(sel, gen, stored)
            return loss, parts, 2 * len(sel) * k

        def flow_validate():
            """Mean energy distance (standardised latents) between generated and encoded cells of held-out targets."""
            gen = epoch_generator(self.seed + 10_007, 0)
            with torch.no_grad():
                z0, z1, rows, arrays = flow_batch(val_groups, gen, stored)
                zhat = net.integrate(z0, net.context(*ctx_of(rows)), pert_embed(arrays, None, k), 8, "euler")
            zhat, z1 = zhat.double(), z1.double()
            return float(np.mean([float(energy_distance(zhat[i * k:(i + 1) * k], z1[i * k:(i + 1) * k]))
                                  for i in range(len(val_groups))]))

        flow_mods = torch.nn.ModuleDict({"context": net.context, "pert": net.pert, "flow": net.flow})
        flow_log = train(flow_mods, param_groups=[{"params": list(flow_mods.parameters())}], step=flow_step,
                         validate=flow_validate if val_groups else None,
                         cfg=replace(base_cfg, epochs=p.flow_epochs), seed=self.seed + 1, device=dev,
                         checkpoint=stage_checkpoint(ckpt, "flow"), desc="cfmvc flow")

        # ---- stage 3 (optional): joint fine-tune through the encoder ----
        joint_log = None
        if p.joint_epochs > 0:
            z_mean = torch.tensor(self.z_mean, dtype=torch.float32, device=dev)
            z_std = torch.tensor(self.z_std, dtype=torch.float32, device=dev)

            def encoded(rows):
                b, ct, _ = ctx_of(rows)
                return (net.vae.encode(rows_to(d.enc_in, rows), b, ct)[0] - z_mean) / z_std

            def joint_step(gen, epoch):
                rows = vae_fit[torch.randint(len(vae_fit), (p.vae_batch,), generator=gen).numpy()]
                vl, recon, _kl = vae_loss(rows, gen, p.kl_weight)
                sel = [fit_groups[i] for i in torch.randint(len(fit_groups), (p.groups_per_step,), generator=gen).numpy()]
                fl, parts = flow_loss(sel, gen, encoded)
                return vl + fl, {**parts, "recon_nll_per_gene": float(recon.detach())}, len(rows) + 2 * len(sel) * k

            joint_log = train(net, param_groups=[{"params": list(net.parameters()), "lr": p.lr * p.joint_lr_scale}],
                              step=joint_step, validate=flow_validate if val_groups else None,
                              cfg=replace(base_cfg, epochs=p.joint_epochs, warmup_epochs=1), seed=self.seed + 2,
                              device=dev, checkpoint=stage_checkpoint(ckpt, "joint"), desc="cfmvc joint")
        net.eval()
        self.shrinkage = fit_shrinkage(self, train_path, val_targets, setting=p.shrinkage,
                                       chunk_size=config.get("chunk_size", DEFAULT_CHUNK))
        stages = {"vae": vae_log, "flow": flow_log, **({"joint": joint_log} if joint_log else {})}
        wall = sum(s["train_wall_s"] for s in stages.values())
        cells = sum(s["cells_seen"] for s in stages.values())
        return {"loss_curve": flow_log["loss_curve"], "val_curve": flow_log["val_curve"],
                "stage_curves": {k_: {"loss": s["loss_curve"], "val": s["val_curve"], "parts": s["loss_parts"]}
                                 for k_, s in stages.items()},
                "stages": {k_: {f: s[f] for f in ("epochs_run", "best_val", "stopped_early", "train_wall_s",
                                                  "cells_per_s")} for k_, s in stages.items()},
                "epochs_run": sum(s["epochs_run"] for s in stages.values()), "train_wall_s": round(wall, 3),
                "cells_seen": cells, "cells_per_s": round(cells / wall, 1) if wall > 0 else None,
                "fit_s": round(time.perf_counter() - t0, 3), "likelihood": self.likelihood, "source": p.source,
                "shrinkage": self.shrinkage.log(),
                "decode": self.decode_mode,
                "spatial_dim": self.spatial_dim, "train_targets": len(targets), "val_targets": sorted(val_targets),
                "groups": len(groups), "cells": n, "device": dev}

    def _encode_rows(self, d: _Data, rows: np.ndarray, dev: str, batch: int = 4096) -> np.ndarray:
        """Posterior means of z_int for training rows (no gradient)."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(rows), batch):
                r = rows[i:i + batch]
                x_in = torch.tensor(d.enc_in[r].toarray(), device=dev)
                b, ct = torch.tensor(d.b[r], device=dev), torch.tensor(d.ct[r], device=dev)
                out.append(self.net.vae.encode(x_in, b, ct)[0].float().cpu().numpy())
        return np.vstack(out).astype(np.float64)

    # -- generation -----------------------------------------------------------------------------------------
    def encode(self, x_in: np.ndarray, batch: str, cell_type: str) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means (z_int, z_tech) of cells whose encoder input is ``x_in`` (log1p counts, or log1p X)."""
        import torch

        dev = self.device
        n = x_in.shape[0]
        b = torch.full((n,), self._index(self.batches, batch), device=dev)
        ct = torch.full((n,), self._index(self.cell_types, cell_type), device=dev)
        with torch.no_grad():
            mi, _li, mt, _lt = self.net.vae.encode(torch.tensor(x_in, dtype=torch.float32, device=dev), b, ct)
        return mi.float().cpu().numpy(), mt.float().cpu().numpy()

    def generate_latent(self, target: str, cell_type: str, batch: str, z_ctrl: np.ndarray, *, seed: int = 0,
                        n_steps: int | None = None, solver: str | None = None, xy: np.ndarray | None = None
                        ) -> np.ndarray:
        """z_int of ``target`` cells flowed from control latents ``z_ctrl`` (or from noise: ``source: gaussian``)."""
        import torch

        p, dev = self.params, self.device
        n = z_ctrl.shape[0]
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            if p.source == "gaussian":
                z0 = torch.randn((n, z_ctrl.shape[1]), generator=gen).to(dev)
            else:
                z0 = torch.tensor((z_ctrl - self.z_mean) / self.z_std, dtype=torch.float32, device=dev)
            b = torch.full((n,), self._index(self.batches, batch), device=dev)
            ct = torch.full((n,), self._index(self.cell_types, cell_type), device=dev)
            xy_t = None
            if self.spatial_dim:
                xy = np.zeros((n, self.spatial_dim)) if xy is None else (xy - self.xy_mean) / self.xy_std
                xy_t = torch.tensor(xy, dtype=torch.float32, device=dev)
            c = self.net.context(b, ct, xy_t)
            arrays = [torch.tensor(a, device=dev)[None] for a in self._target_arrays(target)]
            pe = self.net.pert(*arrays).expand(n, -1)
            z1 = self.net.integrate(z0, c, pe, n_steps or p.n_steps, solver or p.solver)
        return z1.float().cpu().numpy() * self.z_std + self.z_mean

    def _decoder_out(self, z_int: np.ndarray, z_tech: np.ndarray, batch: str) -> np.ndarray:
        import torch

        dev = self.device
        b = torch.full((z_int.shape[0],), self._index(self.batches, batch), device=dev)
        with torch.no_grad():
            return self.net.vae.decode(torch.tensor(z_int, dtype=torch.float32, device=dev),
                                       torch.tensor(z_tech, dtype=torch.float32, device=dev), b).float().cpu().numpy()

    def decode_mean(self, z_int: np.ndarray, z_tech: np.ndarray, batch: str) -> np.ndarray:
        """NB: mean proportions (sum 1 per cell); log1p fallbacks: the expected log1p value (>= 0)."""
        out = self._decoder_out(z_int, z_tech, batch)
        if self.likelihood == "gaussian":
            return np.clip(out, 0, None).astype(np.float64)
        if self.likelihood == "hurdle":
            logit_nz, mean = np.split(out.astype(np.float64), 2, axis=1)
            return 1 / (1 + np.exp(-logit_nz)) * np.clip(mean, 0, None)
        rho = np.exp(out - out.max(1, keepdims=True))
        return rho / rho.sum(1, keepdims=True)

    def decode_cells(self, z_int: np.ndarray, z_tech: np.ndarray, batch: str, lib: np.ndarray,
                     rng: np.random.Generator, mode: str | None = None) -> np.ndarray:
        """log1p expression (the data contract) of latents: NB mean -> (sampled counts) -> normalise -> log1p.

        ``mode`` (default ``decode``): ``sample`` draws NB counts at library size ``lib`` (Gaussian: adds the
        learned per-gene noise); ``mean`` takes the mean itself.
        """
        mode = mode or self.decode_mode
        out = self.decode_mean(z_int, z_tech, batch)
        if self.likelihood in ("gaussian", "hurdle"):
            if mode != "sample":
                return out
            sd = np.exp(0.5 * self.net.vae.log_var.detach().float().cpu().numpy())
            if self.likelihood == "gaussian":
                return np.clip(out + rng.standard_normal(out.shape) * sd, 0, None)
            logit_nz, mean = np.split(self._decoder_out(z_int, z_tech, batch), 2, axis=1)
            nonzero = rng.random(mean.shape) < 1 / (1 + np.exp(-logit_nz))
            return np.where(nonzero, np.clip(mean + rng.standard_normal(mean.shape) * sd, 0, None), 0.0)
        rho = out
        if mode != "sample":
            return np.log1p(rho * self.target_sum)
        theta = np.exp(self.net.vae.log_theta.detach().float().cpu().numpy())
        mu = rho * lib[:, None]
        counts = rng.poisson(rng.gamma(theta, mu / theta))  # NB(mu, theta) as a gamma-Poisson mixture
        tot = counts.sum(1, keepdims=True)
        return np.log1p(np.divide(counts * self.target_sum, tot, out=np.zeros(counts.shape), where=tot > 0))

    @property
    def decode_mode(self) -> str:
        """``decode`` with ``auto`` resolved: delta for NB models, sample for the log1p fallbacks (benchmarked)."""
        if self.params.decode != "auto":
            return self.params.decode
        return "delta" if self.likelihood == "nb" else "sample"

    def _encoder_input(self, controls: ControlCells, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.likelihood == "nb":
            if controls.counts is None:
                raise ContractError("train.h5ad", "layers['counts']", "this CFM-VC model was trained on counts but "
                                    "the control cells have none", "predict with the training split it was fitted on")
            c = controls.counts[pick].toarray().astype(np.float32)
            return np.log1p(c), c.sum(1)
        x = controls.x[pick].toarray().astype(np.float32)
        return x, x.sum(1)

    def predict_cells(self, target: str, cell_type: str, batch: str, controls: ControlCells, pick: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
        if target == CONTROL_LABEL:
            return controls.x[pick].toarray()
        x_in, lib = self._encoder_input(controls, pick)
        z_int, z_tech = self.encode(x_in, batch, cell_type)
        xy = controls.spatial[pick] if (self.spatial_dim and controls.spatial is not None) else None
        z1 = self.generate_latent(target, cell_type, batch, z_int, seed=int(rng.integers(2**62)), xy=xy)
        if self.decode_mode == "delta":
            # The decoded change of the group, added to every drawn control cell. A per-cell change between a
            # generated cell and an unrelated control (the Gaussian source pairs them at random) is mostly noise;
            # on sparse counts its positive half lands on zeros while the negative half is clipped away, so the
            # predicted cells drifted to dense, inflated profiles. The mean over the group has no such bias, and
            # it is taken on the data's scale (sampled counts -> normalise -> log1p), not log1p of the mean.
            change = (self.decode_cells(z1, z_tech, batch, lib, rng, "sample").mean(0)
                      - self.decode_cells(z_int, z_tech, batch, lib, rng, "sample").mean(0))
            return np.clip(controls.x[pick].toarray() + change, 0, None)
        return self.decode_cells(z1, z_tech, batch, lib, rng)

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        raise NotImplementedError("cfmvc generates cells (predict_cells), not one shift per target")

    # -- persistence ----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"net": {k: v.cpu() for k, v in self.net.state_dict().items()}, **self.lookup.state(),
                "likelihood": self.likelihood, "target_sum": self.target_sum, "batches": self.batches,
                "cell_types": self.cell_types, "seen": list(self.seen), "z_mean": self.z_mean, "z_std": self.z_std,
                "spatial_dim": self.spatial_dim, "xy_mean": getattr(self, "xy_mean", None),
                "xy_std": getattr(self, "xy_std", None)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.lookup = FacetLookup.from_state(state)
        self.likelihood, self.target_sum = state["likelihood"], float(state["target_sum"])
        self.batches, self.cell_types = list(state["batches"]), list(state["cell_types"])
        self.seen = {g: i + 1 for i, g in enumerate(state["seen"])}
        self.z_mean, self.z_std = np.asarray(state["z_mean"]), np.asarray(state["z_std"])
        self.spatial_dim = int(state["spatial_dim"])
        self.xy_mean, self.xy_std = state["xy_mean"], state["xy_std"]
        self.device = pick_device(self.params.device, field="model_params.cfmvc.device")
        self.net = build_cfmvc(len(self.genes), len(self.batches), len(self.cell_types), self.spatial_dim,
                               self.lookup.dim, len(self.seen), self.params, self.likelihood)
        self.net.load_state_dict(state["net"])
        self.net.to(self.device).eval()
