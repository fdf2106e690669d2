"""Split strategies, divided controls, templates, and a leakage check that really catches leaks."""

import pandas as pd
import pytest

from pertpipe.data.split import check_no_leakage, make_split, split_summary, template_table
from pertpipe.errors import ConfigError, ContractError, LeakageError


def obs_table(labels_per_ct: dict[str, list[str]], n: int = 10) -> pd.DataFrame:
    rows = []
    for ct, labels in labels_per_ct.items():
        for lab in labels + ["non-targeting"] * 3:
            for k in range(n):
                rows.append((lab, ct, f"b{k % 2}"))
    o = pd.DataFrame(rows, columns=["target_gene", "cell_type", "batch"])
    o.index = [f"c{i}" for i in range(len(o))]
    return o


SINGLES = [f"G{i}" for i in range(10)]
DOUBLES = ["G0+G1", "G2+G3", "G4+G5", "G6+G7", "G8+G9", "G1+G3"]


def _parts(obs, res):
    return obs[res.assignment == "train"], obs[res.assignment == "val"]


def test_random_unseen_holds_out_genes_with_their_doubles():
    obs = obs_table({"A": SINGLES + DOUBLES})
    res = make_split(obs, strategy="random_unseen", seed=1, fraction=0.3)
    tr, va = _parts(obs, res)
    assert len(res.heldout_genes) == 3
    for g in res.heldout_genes:
        assert not tr["target_gene"].str.split("+").apply(lambda p: g in p).any()
        assert g in set(va["target_gene"])
    check_no_leakage(tr, va, heldout_genes=res.heldout_genes)
    # controls divided in every stratum, train and val both get some
    for (_ct, _b), grp in obs[obs.target_gene == "non-targeting"].groupby(["cell_type", "batch"]):
        a = res.assignment[obs.index.get_indexer(grp.index)]
        assert (a == "train").any() and (a == "val").any()
    # seeded: same seed same split, other seed other split
    assert make_split(obs, strategy="random_unseen", seed=1, fraction=0.3).val_targets == res.val_targets
    assert make_split(obs, strategy="random_unseen", seed=2, fraction=0.3).val_targets != res.val_targets


def test_combo_categories():
    obs = obs_table({"A": SINGLES + DOUBLES})
    res = make_split(obs, strategy="combo", seed=0, single_fraction=0.2, combo_fraction=0.5)
    tr, va = _parts(obs, res)
    held = set(res.heldout_genes)
    assert len(held) == 2
    for t, cat in res.categories.items():
        genes = t.split("+")
        if len(genes) == 1:
            assert cat == "single_unseen" and t in held
        else:
            assert cat == f"seen{sum(g not in held for g in genes)}"
    assert any(c == "seen2" for c in res.categories.values())
    check_no_leakage(tr, va, heldout_genes=res.heldout_genes)


def test_cell_line_holdout_unit_is_target_and_cell_type():
    obs = obs_table({"A": SINGLES, "B": SINGLES})
    res = make_split(obs, strategy="cell_line_holdout", seed=0, fraction=0.5, holdout_cell_type="B")
    tr, va = _parts(obs, res)
    assert set(va.loc[va.target_gene != "non-targeting", "cell_type"]) == {"B"}
    # the truth's controls are the held-out line's only (cell-eval compares with every control in the truth)
    assert set(va.loc[va.target_gene == "non-targeting", "cell_type"]) == {"B"}
    assert (tr.loc[tr.target_gene == "non-targeting", "cell_type"] == "A").sum() == (
        (obs.target_gene == "non-targeting") & (obs.cell_type == "A")).sum()
    assert set(res.val_targets) <= set(tr["target_gene"])  # seen in cell type A
    check_no_leakage(tr, va, by_cell_type=True)
    with pytest.raises(ConfigError, match="holdout_cell_type 'C'"):
        make_split(obs, strategy="cell_line_holdout", seed=0, holdout_cell_type="C")


def test_vcc_strategy_and_template_rescaling():
    obs = obs_table({"A": SINGLES})
    vc = pd.DataFrame({"target_gene": ["G1", "G2"], "n_cells": [7, 30]})
    res = make_split(obs, strategy="vcc", seed=0, val_counts=vc)
    assert res.val_targets == ["G1", "G2"]
    t = template_table(obs[res.assignment == "val"], res.n_cells_requested)
    assert t.groupby("target_gene")["n_cells"].sum().to_dict() == {"G1": 7, "G2": 30, "non-targeting": 8}
    vc_bad = pd.DataFrame({"target_gene": ["G1", "NOPE"], "n_cells": [5, 5]})
    with pytest.raises(ContractError) as err:
        make_split(obs, strategy="vcc", seed=0, val_counts=vc_bad, val_counts_path="pert_counts.csv")
    assert "NOPE" in str(err.value) and "pert_counts.csv" in str(err.value)


def test_leakage_check_catches_leaks():
    obs = obs_table({"A": SINGLES + DOUBLES})
    res = make_split(obs, strategy="random_unseen", seed=0, fraction=0.3)
    tr, va = _parts(obs, res)
    leaked = pd.concat([tr, va[va.target_gene != "non-targeting"].iloc[:1]])
    with pytest.raises(LeakageError, match="also in train"):
        check_no_leakage(leaked, va)
    g = res.heldout_genes[0]
    other = next(s for s in SINGLES if s not in res.heldout_genes)
    sneaky = pd.concat([tr, pd.DataFrame({"target_gene": [f"{g}+{other}X"], "cell_type": ["A"], "batch": ["b0"]})])
    with pytest.raises(LeakageError, match="held-out genes"):
        check_no_leakage(sneaky, va, heldout_genes=res.heldout_genes)
    cl = obs_table({"A": SINGLES, "B": SINGLES})
    with pytest.raises(LeakageError):
        check_no_leakage(cl[cl.cell_type == "A"], cl[(cl.cell_type == "A") & (cl.target_gene == "G1")],
                         by_cell_type=True)


def test_unknown_strategy_and_bad_fraction():
    obs = obs_table({"A": SINGLES})
    with pytest.raises(ConfigError, match="strategy is 'lucky'"):
        make_split(obs, strategy="lucky", seed=0)
    with pytest.raises(ConfigError, match="fraction is 1.5"):
        make_split(obs, strategy="random_unseen", seed=0, fraction=1.5)


def test_split_summary_has_id_and_template():
    obs = obs_table({"A": SINGLES})
    res = make_split(obs, strategy="random_unseen", seed=0)
    s = split_summary(obs, res, strategy="random_unseen", seed=0, params={})
    assert s["n_cells"]["train"] + s["n_cells"]["val"] == len(obs)
    assert len(s["split_id"]) == 16 and s["template"][0].keys() == {"target_gene", "cell_type", "batch", "n_cells"}
    res2 = make_split(obs, strategy="random_unseen", seed=5)
    assert split_summary(obs, res2, strategy="random_unseen", seed=5, params={})["split_id"] != s["split_id"]
