"""MiniLM facet embeddings: shape, <NONE> rows zero, determinism, cache reuse, unloadable encoder."""

import os

import numpy as np
import pandas as pd
import pytest

from pertpipe.errors import ConfigError
from pertpipe.knowledge.encode import TextEncoder, facet_tensor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FACETS = [f"f{k}" for k in range(8)]


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder("minilm", device="cpu")


def _table():
    rows = []
    for g in ("A", "B", "C"):
        for k, f in enumerate(FACETS):
            text = "<NONE>" if (g == "C" or k % 3 == 0) else f"{g} takes part in process {k}"
            rows.append((g, f, text, "go"))
    return pd.DataFrame(rows, columns=["gene", "facet", "text", "source"])


def test_tensor_shape_mask_and_determinism(encoder, tmp_path):
    blob = facet_tensor(_table(), ["A", "B", "C"], FACETS, encoder, cache_dir=tmp_path)
    t, m = blob["tensor"].numpy(), blob["mask"].numpy()
    assert t.shape == (3, 8, 384) and m.shape == (3, 8)
    assert m[2].sum() == 0 and np.all(t[2] == 0)  # gene without any facet: all zero
    assert m[0, 0] == 0 and np.all(t[0, 0] == 0) and m[0, 1] == 1 and np.abs(t[0, 1]).sum() > 0
    assert blob["figures"]["unique_texts"] == 2 * 5 and blob["figures"]["embedded_now"] == 10
    # again: same numbers, nothing re-embedded (cache); a fresh encode of the same text is identical
    again = facet_tensor(_table(), ["A", "B", "C"], FACETS, encoder, cache_dir=tmp_path)
    assert again["figures"]["embedded_now"] == 0
    np.testing.assert_array_equal(again["tensor"].numpy(), t)
    fresh = facet_tensor(_table(), ["A", "B", "C"], FACETS, encoder, cache_dir=None)
    np.testing.assert_allclose(fresh["tensor"].numpy(), t, atol=1e-6)
    # different texts give different vectors
    assert not np.allclose(t[0, 1], t[1, 1])


def test_unloadable_encoder_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError) as err:
        TextEncoder(str(tmp_path / "no_such_model"))
    assert "local folder" in str(err.value) and "minilm" in str(err.value)
