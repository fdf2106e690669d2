"""DyGenePT: a gene is K functional facets, and the cell's state decides which facets act.

Network (:class:`DyGenePTNet`, separate from the user-facing :class:`DyGenePTModel`):

* multifaceted gene encoder: the cached facet tensor M_g [K, D] (frozen) and its mask;
* cell-state querier: PCA of log expression (fitted on training cells) -> MLP -> z_c, or (``querier: scgpt``) a
  frozen scGPT encoder's cell embedding -> MLP (:mod:`pertpipe.models.scgpt`); q_c = LayerNorm(ReLU(W_Q z_c));
* context-aware cross-attention: keys M_g W_K, values M_g W_V, scores q_c K_gᵀ/√d per head, ``<NONE>`` facets
  masked out, sparsemax (or entmax-1.5 / softmax) so irrelevant facets get exactly zero; e_{c,g} = Σ_k α_k V_k;
* perturbation decoder: δ_c = MLP([e_{c,g}, q_c]); latent arithmetic z_pred = z_c + δ_c (doubles: the targets'
  shifts summed plus a learned interaction term); the decoder maps latents to log1p expression and a cell's
  predicted change is Dec(z_pred) - Dec(z_c), added to that control cell.

Loss per (target, cell type) group: MSE between the mean predicted change and the observed pseudobulk change,
plus a distribution term (MMD or energy distance) between predicted and observed perturbed cells in PCA space,
plus a sparsity penalty on α. With ``prior: knn`` (default) the network learns the residual over a knowledge
prior (:mod:`pertpipe.models.prior`: the shift of the training targets whose facet embeddings are nearest,
left out group by group in training), and the prediction is prior + network. (The L1 norm of a sparsemax row is always 1, so the penalty used is the Gini
impurity λ(1 - Σ_k α_k²), which is 0 for one-hot attention and largest for uniform attention.) Unseen targets
are predicted from their facet texts alone.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from pertpipe import CONTROL_LABEL
from pertpipe.data.h5io import DEFAULT_CHUNK, H5adReader
from pertpipe.errors import ConfigError
from pertpipe.models.base import PerturbationModel, TrainingSummary, register_model
from pertpipe.models.distances import energy_distance, mmd_rbf
from pertpipe.models.facet_lookup import FacetLookup
from pertpipe.models.params import fraction, positive
from pertpipe.models.prior import FacetKNNPrior
from pertpipe.io import pick_device
from pertpipe.models.shrinkage import check_setting as check_shrinkage
from pertpipe.models.shrinkage import fit_shrinkage
from pertpipe.models.training import TrainConfig, train, validation_targets



def _torch():
    import torch
    return torch


def build_net(n_genes: int, latent_dim: int, facet_dim: int, hidden: int, attn_dim: int, heads: int,
              normaliser: str):
    """The DyGenePT torch module (defined lazily so importing pertpipe.models needs no torch)."""
    import torch
    from torch import nn

    def mlp(i, h, o):
        return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))

    class DyGenePTNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.heads, self.attn_dim = heads, attn_dim
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

        def normalise(self, scores, mask):
            # a bounded large negative: finfo.min would overflow sparsemax's cumulative sums to -inf/NaN
            scores = scores.masked_fill(mask == 0, -1e6)
            if normaliser == "sparsemax":
                from entmax import sparsemax
                a = sparsemax(scores.float(), dim=-1)
            elif normaliser == "entmax15":
                from entmax import entmax15
                a = entmax15(scores.float(), dim=-1)
            else:
                a = torch.softmax(scores.float(), dim=-1)
            a = a * mask  # all-masked rows -> exactly zero
            return a.to(scores.dtype)

        def forward(self, z, facets, fmask, tmask):
            """z [B, n, d]; facets [B, T, K, D]; fmask [B, T, K]; tmask [B, T] -> (change [B, n, G], α [B, n, T, H, K])."""
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
            change = self.decoder(h + delta) - self.decoder(h)
            return change, alpha

    return DyGenePTNet()


@register_model("dygenept")
class DyGenePTModel(PerturbationModel):
    needs_knowledge = True

    @dataclass
    class Params:
        latent_dim: int = positive(32)
        hidden: int = positive(128)
        attn_dim: int = positive(32)
        heads: int = positive(2)
        normaliser: Literal["sparsemax", "entmax15", "softmax"] = "sparsemax"
        cells_per_group: int = positive(24)
        groups_per_step: int = positive(16)
        epochs: int = positive(40)
        steps_per_epoch: int = positive(20)
        lr: float = field(default=2e-3, metadata={"gt": 0})
        weight_decay: float = field(default=1e-4, metadata={"ge": 0})
        warmup_epochs: int = field(default=2, metadata={"ge": 0})
        patience: int = positive(10)
        checkpoint_every: int = positive(1)
        dist_loss: Literal["mmd", "energy", "none"] = "mmd"
        dist_weight: float = field(default=0.05, metadata={"ge": 0})
        attn_sparsity: float = field(default=1e-3, metadata={"ge": 0})
        val_fraction: float = fraction(0.15)
        freeze_querier_epochs: int = field(default=0, metadata={"ge": 0})  # two-phase: a frozen querier first
        querier_lr_scale: float = field(default=0.1, metadata={"ge": 0})
        querier: Literal["pca_mlp", "scgpt"] = "pca_mlp"  # scgpt: a frozen scGPT encoder from scgpt_checkpoint
        scgpt_checkpoint: str | None = None
        scgpt_max_len: int = positive(1200)
        max_cells: int = positive(100_000)
        pca_cells: int = positive(5000)
        device: Literal["auto", "cpu", "cuda"] = "auto"
        gpu: bool = False  # request a GPU from the scheduler (Snakemake resources)
        shrinkage: Any = "auto"  # auto | none | λ in [0, 1]: toward the training mean shift (models.shrinkage)
        prior: Literal["knn", "none"] = "knn"  # the network learns a residual over the facet-kNN prior
        prior_k: int = positive(5)
        prior_tau: float = field(default=0.05, metadata={"gt": 0})

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self._check()  # at config time: Snakemake builds every configured model while parsing

    # ------------------------------------------------------------------------------------------------
    def _check(self) -> None:
        """What the typed Params cannot say (types, choices and bounds are checked by build_model)."""
        p = self.params
        check_shrinkage(p.shrinkage, model="dygenept")
        if p.querier == "scgpt" and not p.scgpt_checkpoint:
            raise ConfigError("model_params.dygenept.querier is 'scgpt' but scgpt_checkpoint is not set. Fix: give "
                              "the folder with scGPT's args.json, vocab.json and best_model.pt")

    def _load_knowledge(self, knowledge: Any) -> None:
        self.lookup = FacetLookup.load(knowledge)
        self.facet_names = self.lookup.names
        self.facets = self.lookup.tensor

    def _load_knowledge_state(self, state: dict[str, Any]) -> None:
        self.lookup = FacetLookup.from_state(state)
        self.facet_names = self.lookup.names
        self.facets = self.lookup.tensor

    def _target_facets(self, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.lookup.target(label)

    def _project(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.pca_mean) @ self.pca_components.T).astype(np.float32)

    def _query_input(self, x: np.ndarray, z_pca: np.ndarray) -> np.ndarray:
        """What the querier reads: PCA coordinates (pca_mlp) or the frozen scGPT cell embedding."""
        return self.scgpt.embed(x) if self.params.querier == "scgpt" else z_pca

    def _load_scgpt(self) -> None:
        self.scgpt = None
        if self.params.querier == "scgpt":
            from pertpipe.models.scgpt import ScGPTEncoder

            self.scgpt = ScGPTEncoder(self.params.scgpt_checkpoint, self.genes, device=self.device,
                                      max_len=self.params.scgpt_max_len)

    def fit(self, train_path: str | os.PathLike, knowledge: Any | None = None,
            config: dict[str, Any] | None = None) -> dict[str, Any]:
        torch = _torch()
        self._check()
        if knowledge is None:
            raise ConfigError("dygenept needs the facet tensor (knowledge stage: facet_embeddings.pt)")
        config = dict(config or {})
        p = self.params
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._load_knowledge(knowledge)
        chunk = config.get("chunk_size", DEFAULT_CHUNK)
        summary = TrainingSummary.from_h5ad(train_path, chunk_size=chunk)
        self.genes = summary.genes
        # PCA of log expression on a subsample, then every kept cell in PCA coordinates (memory: N x d)
        with H5adReader(train_path) as r:
            obs = r.obs[["target_gene", "cell_type", "batch"]].astype(str).reset_index(drop=True)
            keep = np.zeros(r.n_obs, bool)
            keep[rng.choice(r.n_obs, size=min(r.n_obs, p.max_cells), replace=False)] = True
            pca_rows = np.zeros(r.n_obs, bool)
            pca_rows[rng.choice(r.n_obs, size=min(r.n_obs, p.pca_cells), replace=False)] = True
            xs = r.read_masked(pca_rows, chunk_size=chunk).toarray().astype(np.float64)
            self.pca_mean = xs.mean(0)
            d = min(p.latent_dim, min(xs.shape) - 1)
            self.pca_components = np.linalg.svd(xs - self.pca_mean, full_matrices=False)[2][:d]
            self.device = pick_device(p.device, field="model_params.dygenept.device")
            self._load_scgpt()
            Z, Zq = [], []
            for _s, _e, b in r.iter_chunks(chunk, rows=keep):
                dense = b.toarray()
                Z.append(self._project(dense))
                Zq.append(self._query_input(dense, Z[-1]))
            Z, Zq = np.vstack(Z), np.vstack(Zq)
        obs = obs[keep].reset_index(drop=True)
        ctrl_idx = {ct: np.flatnonzero(((obs.target_gene == CONTROL_LABEL) & (obs.cell_type == ct)).to_numpy())
                    for ct in obs.cell_type.unique()}
        groups = []
        for (t, ct), cnt in summary.target_ct_counts.items():
            cells = np.flatnonzero(((obs.target_gene == t) & (obs.cell_type == ct)).to_numpy())
            if len(cells) >= 3 and len(ctrl_idx.get(ct, [])) >= 3:
                delta = (summary.target_ct_means.loc[(t, ct)].to_numpy() -
                         summary.control_ct_means.loc[ct].to_numpy()).astype(np.float32)
                groups.append((t, ct, cells, delta))
        targets = sorted({g[0] for g in groups})
        val_targets = validation_targets(targets, p.val_fraction, rng, model="dygenept", path=train_path)
        # the prior knows the fitted targets only, so the held-out ones stay unseen for early stopping and shrinkage
        self.prior = (FacetKNNPrior.fit(summary, self.lookup, exclude=set(val_targets), k=p.prior_k, tau=p.prior_tau)
                      if p.prior == "knn" else None)
        groups = [(t, ct, cells, delta - self._prior(t, ct, leave_out=(t, ct)).astype(np.float32))
                  for t, ct, cells, delta in groups]  # the network learns the residual over the prior
        fit_groups = [g for g in groups if g[0] not in val_targets]
        val_groups = [g for g in groups if g[0] in val_targets]
        device = self.device
        self.net = build_net(len(self.genes), Zq.shape[1], self.facets.shape[2], p.hidden,
                             p.attn_dim, p.heads, p.normaliser).to(device)
        comps = torch.tensor(self.pca_components.T, dtype=torch.float32, device=device)  # G x d
        Zt = torch.tensor(Z, device=device)
        Zqt = torch.tensor(Zq, device=device)
        gf = {t: tuple(torch.tensor(a, device=device) for a in self._target_facets(t)) for t in targets}
        deltas = [torch.tensor(g[3], device=device) for g in groups]
        priors = [torch.tensor(self._prior(t, ct, leave_out=(t, ct)), dtype=torch.float32, device=device)
                  for t, ct, _c, _d in groups]
        gindex = {id(g): i for i, g in enumerate(groups)}
        n = p.cells_per_group

        def make_batch(sel, gen):
            zq, zc, zp, fs, ms, ts, dl, pr = [], [], [], [], [], [], [], []
            for g in sel:
                t, ct, cells, _ = g
                ci = ctrl_idx[ct][torch.randint(len(ctrl_idx[ct]), (n,), generator=gen).numpy()]
                pi = cells[torch.randint(len(cells), (n,), generator=gen).numpy()]
                zq.append(Zqt[ci])
                zc.append(Zt[ci])
                zp.append(Zt[pi])
                f, m, tt = gf[t]
                fs.append(f), ms.append(m), ts.append(tt)
                dl.append(deltas[gindex[id(g)]])
                pr.append(priors[gindex[id(g)]])
            return (torch.stack(zq), torch.stack(zc), torch.stack(zp), torch.stack(fs), torch.stack(ms),
                    torch.stack(ts), torch.stack(dl), torch.stack(pr))

        def loss_on(batch):
            zq, zc, zp, f, m, t, dl, pr = batch
            change, alpha = self.net(zq, f, m, t)
            mse = ((change.mean(1) - dl) ** 2).mean()
            loss = mse
            parts = {"delta_mse": float(mse.detach())}
            if p.dist_loss != "none" and p.dist_weight > 0:
                pred = zc + (change + pr[:, None, :]) @ comps
                dist = torch.stack([(mmd_rbf if p.dist_loss == "mmd" else energy_distance)(pred[i], zp[i])
                                    for i in range(pred.shape[0])]).mean()
                loss = loss + p.dist_weight * dist
                parts["dist"] = float(dist.detach())
            if p.attn_sparsity > 0:
                gini = (1 - (alpha ** 2).sum(-1))
                valid = (m.sum(-1) > 0)[:, None, :, None].expand_as(gini).to(gini.dtype)
                pen = (gini * valid).sum() / valid.sum().clamp(min=1)
                loss = loss + p.attn_sparsity * pen
                parts["attn_gini"] = float(pen.detach())
            return loss, parts

        def step(gen, epoch):
            idx = torch.randint(len(fit_groups), (p.groups_per_step,), generator=gen).numpy()
            loss, parts = loss_on(make_batch([fit_groups[i] for i in idx], gen))
            return loss, parts, 2 * p.groups_per_step * n

        val_gen_seed = self.seed + 10_007

        def validate():
            if not val_groups:
                return float("nan")
            from pertpipe.models.training import epoch_generator
            gen = epoch_generator(val_gen_seed, 0)
            with torch.no_grad():
                zq, _zc, _zp, f, m, t, dl, _pr = make_batch(val_groups, gen)
                change, _ = self.net(zq, f, m, t)
                return float(((change.mean(1) - dl) ** 2).mean())

        querier = list(self.net.querier.parameters())
        rest = [q for name, q in self.net.named_parameters() if not name.startswith("querier.")]

        def param_groups(epoch):
            if epoch < p.freeze_querier_epochs:
                for q in querier:
                    q.requires_grad_(False)
                return [{"params": rest, "lr": p.lr}]
            for q in querier:
                q.requires_grad_(True)
            scale = p.querier_lr_scale if p.freeze_querier_epochs > 0 else 1.0
            return [{"params": rest, "lr": p.lr}, {"params": querier, "lr": p.lr * scale}]

        cfg = TrainConfig.from_params(p)
        tlog = train(self.net, param_groups=param_groups, step=step, validate=validate if val_groups else None,
                     cfg=cfg, seed=self.seed, device=device, checkpoint=config.get("checkpoint"), desc="dygenept")
        self.net.eval()
        self.shrinkage = fit_shrinkage(self, train_path, val_targets, setting=p.shrinkage, summary=summary,
                                       chunk_size=chunk)
        return {**tlog, "fit_s": round(time.perf_counter() - t0, 3), "train_targets": len(targets),
                "shrinkage": self.shrinkage.log(),
                "querier": p.querier, "scgpt_gene_coverage": round(self.scgpt.coverage, 4) if self.scgpt else None,
                "val_targets": sorted(val_targets), "groups": len(groups), "latent_dim": int(self.pca_components.shape[0]),
                "device": device}

    # ------------------------------------------------------------------------------------------------
    def _forward_cells(self, target: str, x_ctrl: np.ndarray):
        torch = _torch()
        dev = next(self.net.parameters()).device
        f, m, t = (torch.tensor(a, device=dev)[None] for a in self._target_facets(target))
        z = torch.tensor(self._query_input(x_ctrl, self._project(x_ctrl)), device=dev)[None]
        with torch.no_grad():
            change, alpha = self.net(z, f, m, t)
        return change[0].float().cpu().numpy(), alpha[0].float().cpu().numpy()

    def _prior(self, target: str, cell_type: str, *, leave_out: tuple[str, str] | None = None) -> np.ndarray:
        """The facet-kNN prior shift (zeros with ``prior: none``)."""
        if self.prior is None:
            return np.zeros(len(self.genes))
        return self.prior.shift(target, cell_type, leave_out=leave_out)

    def predict_cell_shifts(self, target: str, cell_type: str, x_ctrl: np.ndarray) -> np.ndarray:
        if target == CONTROL_LABEL:
            return np.zeros_like(x_ctrl)
        return self._forward_cells(target, x_ctrl)[0] + self._prior(target, cell_type)

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        raise NotImplementedError("dygenept predicts per cell (predict_cell_shifts)")

    def attention(self, target: str, x_ctrl: np.ndarray) -> np.ndarray:
        """Mean attention [K] over cells and heads for the (first) target gene."""
        _change, alpha = self._forward_cells(target, x_ctrl)
        return alpha[:, 0].mean(axis=(0, 1))

    def state(self) -> dict[str, Any]:
        return {"net": {k: v.cpu() for k, v in self.net.state_dict().items()}, "pca_mean": self.pca_mean,
                "pca_components": self.pca_components, **self.lookup.state(),
                "prior": self.prior.state() if self.prior is not None else None}

    def set_state(self, state: dict[str, Any]) -> None:
        self.pca_mean = np.asarray(state["pca_mean"])
        self.pca_components = np.asarray(state["pca_components"])
        self._load_knowledge_state(state)
        self.prior = FacetKNNPrior.from_state(state["prior"], self.lookup) if state.get("prior") else None
        p = self.params
        self.device = pick_device(p.device, field="model_params.dygenept.device")
        self._load_scgpt()
        q_dim = self.scgpt.dim if self.scgpt else self.pca_components.shape[0]
        self.net = build_net(len(self.genes), q_dim, self.facets.shape[2], p.hidden, p.attn_dim, p.heads,
                             p.normaliser)
        self.net.load_state_dict(state["net"])
        self.net.to(self.device).eval()
