"""GEARS (Roohani et al. 2023, PyPI ``cell-gears``) as a registered peer model, trained with its own code on our split.

What the wrapper does, and what it leaves to GEARS:

* **Data.** The training split's log1p cells (at most ``max_cells``, controls kept) on the ``n_genes`` most
  variable genes plus every training target among the genes, as GEARS wants them: ``obs["condition"]`` =
  ``"A+ctrl"`` for a single target, ``"A+B"`` for a combination, ``"ctrl"`` for controls; ``obs["cell_type"]``,
  ``var["gene_name"]``. GEARS's own
  ``PertData.new_data_process`` computes its DE genes and non-zero masks and builds its cell graphs.
* **GO graph.** GEARS downloads ``gene2go_all.pkl`` from Harvard Dataverse (impossible offline); the wrapper writes
  the same mapping (gene symbol -> set of GO ids) from NCBI ``gene2go`` + ``gene_info`` (the knowledge stage's
  annotation files) and builds GEARS's perturbation graph as GEARS's ``make_GO`` does: Jaccard similarity of
  GO term sets, edges above 0.1, the ``num_similar_genes_go_graph + 1`` strongest per gene (vectorised here
  instead of a 25-process Python loop), then GEARS's ``GeneSimNetwork``.
* **Split.** Our held-out perturbations never reach GEARS. Of the training targets, ``val_fraction`` form GEARS's
  validation set (its best-model selection); GEARS's test stage is not run (our stage 3 scores the model).
* **Training.** ``GEARS.model_initialize`` / ``GEARS.train`` with the configured sizes, on CPU or CUDA.
* **Prediction.** GEARS's output for a cell is the cell's control expression plus a term that does not depend
  on the cell (``GEARS_Model.forward``: ``out = f + x``), so its prediction is a per-perturbation shift. ``f``
  does depend on the cell's *position in the batch*: GEARS's co-expression graph covers node numbers
  0..genes-1 only, so its GNN reaches the first cell of a batch and not the others. ``GEARS.predict`` averages a
  batch of 300 control cells; ``predict_shift`` runs the same batch with ``x = 0`` and averages it (the mean of
  ``x`` is what the drawn control cells add back), which is GEARS's prediction minus its control mean.
  Genes outside GEARS's gene set get 0; a target without GO annotation cannot be placed in GEARS's graph and
  is predicted as control (noted).

Licence: cell-gears is MIT licensed; ``train_log.json`` records the package, version and licence.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertpipe import perturbation_genes
from pertpipe.errors import ConfigError
from pertpipe.models.base import PredictsShift, register_model
from pertpipe.models.inputs import ModelInputs
from pertpipe.models.peers.common import peer_record, require_peer, training_cells

PREDICT_BATCH = 300  # GEARS.predict's batch of control cells


def gene2go_sets(gene2go: pd.DataFrame, gene_info: pd.DataFrame) -> dict[str, set[str]]:
    """Gene symbol -> set of GO ids (NCBI gene2go joined to gene_info), the content of GEARS's gene2go_all.pkl."""
    sym = dict(zip(gene_info["gene_id"], gene_info["symbol"]))
    out: dict[str, set[str]] = {}
    for gid, go in zip(gene2go["gene_id"], gene2go["go_id"]):
        s = sym.get(gid)
        if s is not None:
            out.setdefault(s, set()).add(go)
    return out


def go_jaccard_edges(genes: list[str], go_sets: dict[str, set[str]], *, threshold: float = 0.1,
                     block: int = 2048) -> pd.DataFrame:
    """Edges (source, target, importance) with Jaccard(GO(source), GO(target)) > ``threshold`` among ``genes``
    (self-pairs included), in GEARS's ``make_GO`` row order (by source, then target, in ``genes`` order)."""
    terms = sorted({t for g in genes for t in go_sets[g]})
    col = {t: i for i, t in enumerate(terms)}
    rows = np.repeat(np.arange(len(genes)), [len(go_sets[g]) for g in genes])
    cols = np.fromiter((col[t] for g in genes for t in go_sets[g]), dtype=np.int64, count=len(rows))
    M = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(genes), len(terms)))
    size = np.asarray(M.sum(axis=1)).ravel()
    names = np.asarray(genes, dtype=object)
    parts = []
    for a in range(0, len(genes), block):
        inter = (M[a:a + block] @ M.T).toarray()
        jac = inter / (size[a:a + block, None] + size[None, :] - inter)
        src, tgt = np.nonzero(jac > threshold)
        parts.append(pd.DataFrame({"source": names[src + a], "target": names[tgt], "importance": jac[src, tgt]}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["source", "target", "importance"])


def _condition(label: str) -> str:
    """Our perturbation label as a GEARS condition: ``ctrl``, ``A+ctrl``, ``A+B``."""
    genes = perturbation_genes(label)
    return "ctrl" if not genes else "+".join(genes if len(genes) > 1 else [genes[0], "ctrl"])


@register_model("gears")
class GearsModel(PredictsShift):
    """GEARS trained by its own code on the training split (peer; optional extra ``peers``)."""

    inputs = ("annotations",)  # gene_info + gene2go: GEARS's GO graph
    peer: ClassVar[dict[str, str]] = {"distribution": "cell-gears", "licence": "MIT",
                                      "source": "https://github.com/snap-stanford/GEARS"}

    @dataclass
    class Params:
        n_genes: int = 5000  # most variable genes modelled (0: all); training targets are always included
        max_cells: int = 20000  # training cells handed to GEARS (random, seeded; controls kept)
        hidden_size: int = 64
        num_go_gnn_layers: int = 1
        num_gene_gnn_layers: int = 1
        decoder_hidden_size: int = 16
        num_similar_genes_go_graph: int = 20
        num_similar_genes_co_express_graph: int = 20
        coexpress_threshold: float = 0.4
        direction_lambda: float = 0.1
        epochs: int = 20
        lr: float = 1e-3
        weight_decay: float = 5e-4
        batch_size: int = 32
        val_fraction: float = 0.1  # training targets GEARS validates on (its best-model selection)
        device: str = "cpu"

    def __init__(self, params: Any, *, seed: int = 0) -> None:
        require_peer("gears", ("gears", "torch_geometric"), "cell-gears==0.1.2 torch_geometric==2.8.0.post1",
                     self.peer["licence"])
        super().__init__(params, seed=seed)
        self._net = None

    # -- training -----------------------------------------------------------------------------------------
    def fit(self, inputs: ModelInputs) -> dict[str, Any]:
        train = inputs.train
        ann = {"gene2go": inputs.need("gene2go", "gears"), "gene_info": inputs.need("gene_info", "gears")}
        import torch

        from pertpipe.knowledge.annotations import read_gene2go, read_gene_info

        t0 = time.perf_counter()
        p = self.params
        self._summarise(inputs)
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        go_sets = gene2go_sets(read_gene2go(ann["gene2go"]), read_gene_info(ann["gene_info"]))
        adata, dropped = self._gears_input(train, go_sets)
        train_perts = sorted(set(adata.obs["condition"]) - {"ctrl"})
        if len(train_perts) < 2:
            raise ConfigError(f"{train}: GEARS needs at least 2 training perturbations with GO annotation, found "
                              f"{len(train_perts)} (targets without GO terms: {dropped[:5]}). Fix: use a dataset "
                              "with more perturbations, or leave 'gears' out")
        with tempfile.TemporaryDirectory(prefix="gears-") as tmp:
            net, fit_log = self._train_gears(adata, go_sets, train_perts, tmp)
        self._set_network(net)
        fit_log.update({"fit_s": round(time.perf_counter() - t0, 3), "gears_genes": len(self.gears_genes),
                        "gears_perts_in_go_graph": len(self.pert_list), "train_targets": len(train_perts),
                        "targets_without_go_dropped": dropped, "device": p.device,
                        "peer": peer_record(**self.peer)})
        return fit_log

    def _gears_input(self, train: str | os.PathLike, go_sets: dict[str, set[str]]):
        """The training cells as GEARS's AnnData (log1p X, condition, cell_type, gene_name), and the targets
        left out for lack of GO annotation."""
        import anndata as ad

        from pertpipe.core.h5io import H5adReader

        p = self.params
        with H5adReader(train) as r:
            obs = r.obs
        target = obs["target_gene"].astype(str).to_numpy()
        has_go = np.array([all(g in go_sets for g in perturbation_genes(t)) for t in target])
        dropped = sorted(set(target[~has_go]))
        X, rows, keep = training_cells(train, self.genes, target, has_go, max_cells=p.max_cells,
                                       n_genes=p.n_genes, seed=self.seed)
        genes = np.asarray(self.genes)
        cond = np.array([_condition(t) for t in target[rows]], dtype=object)
        cell_type = obs["cell_type"].astype(str).to_numpy()[rows] if "cell_type" in obs else np.full(len(rows), "cell")
        a = ad.AnnData(X=X, obs=pd.DataFrame({"condition": cond, "cell_type": cell_type},
                                            index=[f"c{i}" for i in rows]),
                       var=pd.DataFrame({"gene_name": genes[keep]}, index=pd.Index(genes[keep])))
        self.gene_idx = keep
        return a, dropped

    def _train_gears(self, adata, go_sets: dict[str, set[str]], train_perts: list[str], tmp: str):
        import pickle

        from gears import GEARS, PertData
        from gears.utils import GeneSimNetwork

        p = self.params
        with open(os.path.join(tmp, "gene2go_all.pkl"), "wb") as fh:  # GEARS reads this instead of downloading it
            pickle.dump(go_sets, fh)
        pert_data = PertData(tmp, default_pert_graph=False)
        pert_data.new_data_process(dataset_name="pertpipe", adata=adata)
        rng = np.random.default_rng(self.seed)
        n_val = max(1, int(round(p.val_fraction * len(train_perts)))) if len(train_perts) > 2 else 1
        val = sorted(rng.choice(train_perts, n_val, replace=False).tolist())
        split = {"train": ["ctrl", *[c for c in train_perts if c not in val]], "val": val}
        split_path = os.path.join(tmp, "split.pkl")
        with open(split_path, "wb") as fh:
            pickle.dump(split, fh)
        pert_data.prepare_split(split="custom", split_dict_path=split_path)
        pert_data.split = "no_test"  # train/val loaders only: our stage 3 does the testing
        pert_data.get_dataloader(batch_size=p.batch_size, test_batch_size=p.batch_size)
        # GEARS.__init__ indexes X with a pandas boolean Series, which scipy >= 1.15 refuses for sparse matrices:
        # it gets a dense X for that one step (its co-expression graph then needs the sparse X back)
        sparse_x = pert_data.adata.X
        pert_data.adata.X = sparse_x.toarray()
        model = GEARS(pert_data, device=p.device)
        pert_data.adata.X = sparse_x
        pert_list = list(model.pert_list)
        edges = go_jaccard_edges(pert_list, go_sets)
        k = p.num_similar_genes_go_graph
        top = edges.groupby("target").apply(lambda x: x.nlargest(k + 1, ["importance"])).reset_index(drop=True)
        graph = GeneSimNetwork(top, pert_list, node_map=model.node_map_pert)
        model.model_initialize(hidden_size=p.hidden_size, num_go_gnn_layers=p.num_go_gnn_layers,
                               num_gene_gnn_layers=p.num_gene_gnn_layers, decoder_hidden_size=p.decoder_hidden_size,
                               num_similar_genes_go_graph=k,
                               num_similar_genes_co_express_graph=p.num_similar_genes_co_express_graph,
                               coexpress_threshold=p.coexpress_threshold, direction_lambda=p.direction_lambda,
                               G_go=graph.edge_index, G_go_weight=graph.edge_weight)
        model.train(epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay)
        self.gears_genes = list(model.gene_list)
        self.pert_list = pert_list
        config = {k: v for k, v in model.config.items() if k != "device"}
        net = {"config": config, "state_dict": {k: v.cpu() for k, v in model.best_model.state_dict().items()}}
        return net, {"gears_val_perturbations": val, "go_graph_edges": int(graph.edge_index.shape[1])}

    # -- prediction ---------------------------------------------------------------------------------------
    def _set_network(self, net: dict[str, Any]) -> None:
        self._state_net = net
        self._net = None
        self._shift_cache: dict[str, np.ndarray] = {}

    def _network(self):
        if self._net is None:
            from gears.model import GEARS_Model

            cfg = {**self._state_net["config"], "device": "cpu"}
            net = GEARS_Model(cfg)
            net.load_state_dict(self._state_net["state_dict"])
            net.eval()
            self._net = net
        return self._net

    def predict_shift(self, target: str, cell_type: str) -> np.ndarray:
        if target in self._shift_cache:
            return self._shift_cache[target]
        shift = np.zeros(len(self.genes))
        genes = perturbation_genes(target)
        if not genes or any(g not in self.pert_list for g in genes):
            self.notes[target] = "no GO annotation: not in GEARS's perturbation graph, predicted as control"
        else:
            import torch
            from torch_geometric.data import Batch, Data

            n = len(self.gears_genes)
            idx = [self.pert_list.index(g) for g in genes]
            data = Batch.from_data_list([Data(x=torch.zeros(n, 1), pert_idx=idx)] * PREDICT_BATCH)
            with torch.no_grad():
                out = self._network()(data)
            shift[self.gene_idx] = out.numpy().astype(np.float64).mean(axis=0)
        self._shift_cache[target] = shift
        return shift

    def state(self) -> dict[str, Any]:
        return {"net": self._state_net, "gears_genes": self.gears_genes, "pert_list": self.pert_list,
                "gene_idx": self.gene_idx}

    def set_state(self, state: dict[str, Any]) -> None:
        self.gears_genes = list(state["gears_genes"])
        self.pert_list = list(state["pert_list"])
        self.gene_idx = np.asarray(state["gene_idx"])
        self._set_network(state["net"])
