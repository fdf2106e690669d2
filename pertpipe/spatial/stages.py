"""The spatial branch's rules as library calls (paths in, artifacts out, each written atomically)."""

from __future__ import annotations

import logging
import os
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from pertpipe.core.h5io import read_anndata, read_var, write_anndata
from pertpipe.errors import ConfigError, ContractError
from pertpipe.io import atomic_path, load_torch, read_json, save_torch, write_json
from pertpipe.spatial import evaluate as ev
from pertpipe.spatial.inputs import read_pair, summary
from pertpipe.spatial.lrimpute import Validation, impute_inputs, smooth_and_mask
from pertpipe.spatial.model import (
    LRImputeModule,
    SpatialParams,
    columns,
    fit_lrimpute,
    knn_labels,
    log_normalize,
    predict_lrimpute,
)
from pertpipe.spatial.prepare import Latent, Priors, cell_type_fractions, latent, prepare
from pertpipe.spatial.priors import (
    ligand_target_prior,
    normalized_laplacian,
    ppi_adjacency,
    read_ligand_target_matrix,
    read_ppi,
    read_table,
)
from pertpipe.spatial.resources import expressed_genes, match_symbols, read_lr_resource, select_lr_genes
from pertpipe.spatial.validation import validate

log = logging.getLogger("pertpipe.spatial")


def run_inputs(adapter: str, files: dict[str, str], options: dict[str, Any], species: str, out_spatial: str,
               out_scrna: str, out_json: str, provenance: dict[str, Any]) -> dict[str, Any]:
    spatial, scrna = read_pair(adapter, files, options)
    spatial.uns["species"] = scrna.uns["species"] = species
    info = {**summary(spatial, scrna), "species": species, "adapter": adapter, "files": files, **provenance}
    write_anndata(spatial, out_spatial)
    write_anndata(scrna, out_scrna)
    write_json(info, out_json)
    return info


def run_lr_genes(spatial_path: str, scrna_path: str, resource_path: str, resource: str, species: str, *,
                 min_mean: float, min_fraction: float, out_json: str) -> dict[str, Any]:
    spatial, scrna = read_anndata(spatial_path), read_anndata(scrna_path)
    pairs, matched = match_symbols(read_lr_resource(resource_path, resource, species), list(scrna.var_names))
    said = (f"{matched['matched_exactly'] + matched['matched_ignoring_case']} of the resource's "
            f"{matched['resource_genes']} genes are in the scRNA-seq ({matched['matched_ignoring_case']} matched "
            "ignoring case)")
    sc_log = log_normalize(scrna.X)
    expressed = expressed_genes(sc_log, scrna.X, list(scrna.var_names), scrna.obs["cell_type"].to_numpy(),
                                min_mean=min_mean, min_fraction=min_fraction)
    info = select_lr_genes(pairs, list(scrna.var_names), list(spatial.var_names), expressed)
    if not info["lr_genes"]:
        raise ContractError(scrna_path, "lr_genes", f"no gene of the {resource} resource passes min_mean {min_mean} "
                            f"and min_fraction {min_fraction} in any cell type; {said} "
                            f"({lr_expression_range(pairs, scrna, sc_log)})",
                            "lower spatial.lr.min_mean / min_fraction to what the data reach")
    info.update({"symbols": matched, "resource": resource, "resource_file": resource_path, "species": species,
                 "thresholds": {"min_mean": min_mean, "min_fraction": min_fraction},
                 "heldout_eligible": ev.eligible_genes(info["lr_genes"], spatial)})
    write_json(info, out_json)
    return info


def lr_expression_range(pairs: pd.DataFrame, scrna: ad.AnnData, sc_log: Any) -> str:
    """The best mean log1p and the best fraction of cells with a count that any resource gene reaches in any cell
    type (what the thresholds are compared with), or that no resource gene is in the data."""
    genes = sorted({g for gs in list(pairs.ligand_genes) + list(pairs.receptor_genes) for g in gs})
    col = {g: j for j, g in enumerate(scrna.var_names)}
    have = [col[g] for g in genes if g in col]
    if not have:
        return (f"none of the resource's {len(genes)} genes is among the scRNA-seq's {scrna.n_vars} gene names, e.g. "
                f"{list(scrna.var_names[:3])}: check the species and the gene symbols")
    types = scrna.obs["cell_type"].astype(str).to_numpy()
    best_mean = best_frac = 0.0
    for t in np.unique(types):
        rows = np.flatnonzero(types == t)
        best_mean = max(best_mean, float(np.asarray(sc_log[rows][:, have].mean(0)).max()))
        best_frac = max(best_frac, float(np.asarray((scrna.X[rows][:, have] > 0).mean(0)).max()))
    return (f"{len(have)} resource genes are in the data; the highest mean log1p any reaches in a cell type is "
            f"{best_mean:.3g}, the highest fraction of cells with a count {best_frac:.3g}")


def _receptors_of(lr: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in lr["pairs"]:
        for g in p["ligand_genes"]:
            out.setdefault(g, []).extend(p["receptor_genes"])
    return out


def run_priors(lr_json: str, spatial_path: str, *, ppi: str, ppi_path: str | None, ppi_min_score: float,
               ligand_target: str, networks: dict[str, str], damping: float, max_confidence: str, out_npz: str,
               out_json: str) -> dict[str, Any]:
    lr = read_json(lr_json)
    genes, ligands = lr["lr_genes"], lr["ligands"]
    targets = [str(g) for g in read_var(spatial_path).index]
    info: dict[str, Any] = {"ppi": ppi, "ligand_target": ligand_target, "species": lr["species"]}
    if lr["species"] != "human":
        info["species_note"] = ("human networks (PPI, NicheNet, DoRothEA) applied to mouse genes through symbols "
                                "matched case-insensitively (orthologues by name)")
    lap = np.zeros((len(genes), len(genes)), np.float32)
    if ppi != "none":
        complexes = [p["receptor_genes"] for p in lr["pairs"]] + [p["ligand_genes"] for p in lr["pairs"]]
        w = ppi_adjacency(read_ppi(ppi_path, ppi), genes, complexes, min_weight=ppi_min_score)
        lap = normalized_laplacian(w).astype(np.float32)
        info.update({"ppi_edges": int(w.nnz // 2), "genes_with_ppi_edges": int((w.getnnz(1) > 0).sum())})
    prior = np.zeros((len(ligands), len(targets)), np.float32)
    if ligand_target == "built":
        prior, lt = ligand_target_prior(
            ligands, targets, lr_network=read_table(networks["lr"]), sig_network=read_table(networks["sig"]),
            dorothea=read_table(networks["dorothea"]), gr_network=read_table(networks["gr"]),
            extra_receptors=_receptors_of(lr), damping=damping, max_confidence=max_confidence)
        info["ligand_target_built"] = lt
    elif ligand_target == "nichenet_matrix":
        prior = read_ligand_target_matrix(networks["matrix"], ligands, targets)
        info["ligand_target_matrix"] = {"nonzero_fraction": float((prior > 0).mean())}
    info["n_genes"], info["n_ligands"], info["n_targets"] = len(genes), len(ligands), len(targets)
    with atomic_path(out_npz, suffix=".npz") as tmp:
        np.savez_compressed(tmp, genes=np.array(genes), laplacian=lap, ligands=np.array(ligands),
                            targets=np.array(targets), prior=prior.astype(np.float32))
    write_json(info, out_json)
    return info


def load_priors(npz: str, *, use_ppi: bool = True, use_lt: bool = True) -> Priors:
    d = np.load(npz, allow_pickle=False)
    return Priors([str(g) for g in d["genes"]], d["laplacian"] if use_ppi else None, [str(g) for g in d["ligands"]],
                  [str(g) for g in d["targets"]], d["prior"] if use_lt else None)


def run_knn_labels(spatial_path: str, scrna_path: str, lr_json: str, priors_npz: str, params: SpatialParams,
                   out_h5ad: str, out_json: str, *, checkpoint: str | None = None) -> dict[str, Any]:
    """Validation (k, residual transfer, smoothing, priors: chosen on visible genes), the latent space and the
    pseudo-labels; the latent fits checkpoint to ``checkpoint`` (resumed when a killed job runs again), removed once
    the outputs are written."""
    from pertpipe.core.training import stage_checkpoint

    spatial, scrna = read_anndata(spatial_path), read_anndata(scrna_path)
    genes = read_json(lr_json)["lr_genes"]
    prep = prepare(spatial, scrna, max_input_genes=params.max_input_genes)
    val = validate(prep, params, spatial=spatial, scrna=scrna, lr_genes=genes, priors=load_priors(priors_npz),
                   checkpoint=stage_checkpoint(checkpoint, "validation") if checkpoint else None)
    lat = latent(prep, params, k=val.k, neighbours=val.neighbours, checkpoint=checkpoint)
    labels, mask = knn_labels(lat.idx, prep.sc_log[:, prep.sc_cols(genes)], prep.sc_counts[:, prep.sc_cols(genes)])
    frac, types = cell_type_fractions(prep, lat)
    out = ad.AnnData(X=labels, obs=pd.DataFrame(index=spatial.obs_names), var=pd.DataFrame(index=pd.Index(genes)))
    out.layers["mask"] = mask.astype(np.int8)
    out.obsm["spatial"] = spatial.obsm["spatial"]
    out.obsm["z_sp"], out.obsm["knn"], out.obsm["cell_type_fractions"] = lat.z_sp, lat.idx, frac
    out.uns["z_sc"], out.uns["cell_types"], out.uns["input_genes"] = lat.z_sc, types, prep.input_genes
    choice = val.as_dict()
    out.uns["validation"] = {k: v for k, v in choice.items() if k != "scores"}
    write_anndata(out, out_h5ad)
    info = {**lat.info, "validation": choice, "n_input_genes": len(prep.input_genes), "n_lr_genes": len(genes),
            "masked_fraction": float(1 - mask.mean()),
            "matched_cell_types": {t: float(frac[:, i].mean()) for i, t in enumerate(types)}}
    write_json(info, out_json)
    _remove_checkpoints(checkpoint)  # and the validation fit's stage checkpoint beside it
    return info


def _remove_checkpoints(checkpoint: str | None) -> None:
    """Training finished and its outputs are written: the resume checkpoints are not needed."""
    from pertpipe.core.training import checkpoint_files

    for ckpt in checkpoint_files(checkpoint) if checkpoint else []:
        os.remove(ckpt)


def _lat_from(knn: ad.AnnData) -> Latent:
    return Latent(np.asarray(knn.obsm["z_sp"]), np.asarray(knn.uns["z_sc"]), np.asarray(knn.obsm["knn"]), {})


def _validation_of(knn: ad.AnnData) -> Validation:
    return Validation.from_dict(dict(knn.uns["validation"]))


def run_train(spatial_path: str, scrna_path: str, knn_path: str, priors_npz: str, params: SpatialParams,
              out_model: str, out_json: str, *, checkpoint: str | None = None) -> dict[str, Any]:
    """lrimpute on the slide with the choices knn_labels validated (residual transfer, priors); trained by the
    shared loop with resume checkpoints at ``checkpoint``."""
    spatial, scrna, knn = read_anndata(spatial_path), read_anndata(scrna_path), read_anndata(knn_path)
    genes = list(knn.var_names)
    val = _validation_of(knn)
    prep = prepare(spatial, scrna, max_input_genes=params.max_input_genes)
    inp = impute_inputs(prep, _lat_from(knn), genes, load_priors(priors_npz), params, val)
    model, info = fit_lrimpute(inp, params, checkpoint=checkpoint)
    save_torch({"state_dict": model.state_dict(), "out_genes": inp.out_genes, "params": params.__dict__,
                "latent_dim": inp.z_sp.shape[1], "validation": {k: v for k, v in val.as_dict().items()
                                                                if k != "scores"}}, out_model)
    info.update({"n_out_genes": len(inp.out_genes), "n_observed_lr_genes": len(inp.obs_genes or []),
                 "n_lt_targets": 0 if inp.targets is None else int(inp.targets.shape[1]),
                 "priors_used": {"ppi": inp.laplacian is not None, "ligand_target": inp.prior is not None},
                 "residual_strength": val.strength, "regression_weight": val.regression,
                 "regression_alpha": val.regression_alpha, "smooth": val.smooth, "offset": val.offset,
                 "depth": val.depth})
    write_json(info, out_json)
    _remove_checkpoints(checkpoint)
    return info


def run_impute(spatial_path: str, scrna_path: str, knn_path: str, model_path: str, out_h5ad: str) -> dict[str, Any]:
    spatial, scrna, knn = read_anndata(spatial_path), read_anndata(scrna_path), read_anndata(knn_path)
    ck = load_torch(model_path)
    params = SpatialParams(**ck["params"])
    val = Validation.from_dict(ck["validation"])
    genes = list(knn.var_names)
    prep = prepare(spatial, scrna, max_input_genes=params.max_input_genes)
    lat = _lat_from(knn)
    inp = impute_inputs(prep, lat, genes, None, params, val)
    model = LRImputeModule(ck["latent_dim"], params.hidden, len(ck["out_genes"]))
    model.load_state_dict(ck["state_dict"])
    pred = predict_lrimpute(model, lat.z_sp, inp.labels, inp.mask if params.mask else None)
    pred = smooth_and_mask(pred, prep.coords, params, val, inp.mask, library=prep.library())
    col = {g: j for j, g in enumerate(ck["out_genes"])}
    x = pred[:, [col[g] for g in genes]]
    out = ad.AnnData(X=x, obs=pd.DataFrame(index=spatial.obs_names), var=pd.DataFrame(index=pd.Index(genes)))
    measured = [g in set(spatial.var_names) for g in genes]
    out.var["measured_in_spatial"] = measured
    sp_col = {g: j for j, g in enumerate(prep.sp_genes)}
    meas = np.zeros_like(x)
    have = [j for j, g in enumerate(genes) if g in sp_col]
    meas[:, have] = columns(prep.sp_log, [sp_col[genes[j]] for j in have])
    out.layers["measured"] = meas
    out.layers["knn_mean"] = knn.X
    out.obsm["spatial"] = spatial.obsm["spatial"]
    write_anndata(out, out_h5ad)
    return {"n_spots": out.n_obs, "n_lr_genes": len(genes), "n_measured": int(sum(measured))}


def run_evaluate(spatial_path: str, scrna_path: str, lr_json: str, priors_npz: str, params: SpatialParams,
                 settings: dict[str, Any], out_per_gene: str, out_summary: str, out_json: str,
                 out_heldout: str, *, workers: int = 0) -> dict[str, Any]:
    spatial, scrna = read_anndata(spatial_path), read_anndata(scrna_path)
    genes = read_json(lr_json)["lr_genes"]
    methods = list(settings["methods"])
    if "lrimpute" not in methods:
        raise ConfigError("spatial.evaluate.methods must include lrimpute (the model the branch evaluates). "
                          "Fix: add it")
    res = ev.kfold_evaluate(spatial, scrna, genes, load_priors(priors_npz), params, methods, k=settings["folds"],
                            max_genes=settings.get("max_genes"), tangram_epochs=settings["tangram_epochs"],
                            gimvi_epochs=settings["gimvi_epochs"], workers=workers)
    with atomic_path(out_per_gene, suffix=".csv") as tmp:
        res["per_gene"].to_csv(tmp, index=False)
    summ = res["summary"].sort_values("pcc", ascending=False)
    with atomic_path(out_summary, suffix=".csv") as tmp:
        summ.to_csv(tmp)
    h = ad.AnnData(X=res["truth"], obs=pd.DataFrame(index=spatial.obs_names),
                   var=pd.DataFrame(index=pd.Index(res["genes"])))
    for m, p in res["predictions"].items():
        h.layers[m] = p
    h.obsm["spatial"] = spatial.obsm["spatial"]
    write_anndata(h, out_heldout)
    base = summ.loc["lrimpute"]
    paired = {}
    pg = res["per_gene"].pivot_table(index="gene", columns="method", values="pcc")
    for m in summ.index:
        if m != "lrimpute":
            d = pg["lrimpute"] - pg[m]
            paired[m] = {"median_pcc_delta": float(base["pcc"] - summ.loc[m, "pcc"]),
                         "genes_lrimpute_better": int((d > 0).sum()), "n_genes": int(d.notna().sum())}
    info = {"methods": methods, "folds": res["folds"], "n_heldout_genes": len(res["genes"]),
            "summary": {m: {k: float(v) for k, v in row.items()} for m, row in summ.iterrows()},
            "lrimpute_vs": paired, "unavailable": res["unavailable"], "params": params.__dict__,
            "validation_per_fold": res["validation"],
            "settings": settings}
    write_json(info, out_json)
    return info


def run_communication(spatial_path: str, scrna_path: str, lr_json: str, knn_path: str, imputed_path: str, *,
                      neighbors: int, out_json: str, out_csv: str) -> dict[str, Any]:
    spatial, scrna = read_anndata(spatial_path), read_anndata(scrna_path)
    lr, knn, imp = read_json(lr_json), read_anndata(knn_path), read_anndata(imputed_path)
    sp_col = {g: j for j, g in enumerate(spatial.var_names)}
    have = [g for g in lr["lr_genes"] if g in sp_col]
    dense = columns(log_normalize(spatial.X), [sp_col[g] for g in have])
    measured = {g: dense[:, j] for j, g in enumerate(have)}
    imputed = {g: np.asarray(imp.X[:, j]) for j, g in enumerate(imp.var_names)}
    sc_log = log_normalize(scrna.X)
    sc_col = {g: j for j, g in enumerate(scrna.var_names)}
    expected = ev.expected_expression(sc_log, scrna.obs["cell_type"].astype(str).to_numpy(),
                                      {g: sc_col[g] for g in lr["lr_genes"]}, np.asarray(knn.obsm["cell_type_fractions"]),
                                      list(knn.uns["cell_types"]))
    rec = ev.communication_recovery(lr["pairs"], np.asarray(spatial.obsm["spatial"]), measured, imputed, expected,
                                    k=neighbors)
    table = rec.pop("table")
    with atomic_path(out_csv, suffix=".csv") as tmp:
        table.sort_values("expected", ascending=False).to_csv(tmp, index=False)
    write_json(rec, out_json)
    return rec
