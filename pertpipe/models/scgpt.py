"""A frozen scGPT cell encoder, loaded from a checkpoint folder in scGPT's own format.

The ``scgpt`` package pins its own torch/torchtext stack, which conflicts with ours, so this is a compatible
loader: it rebuilds the parts of scGPT's ``TransformerModel`` that produce the cell embedding, with scGPT's
parameter names, and loads ``best_model.pt`` into them:

* ``encoder.embedding`` / ``encoder.enc_norm`` (gene token embedding + LayerNorm),
* ``value_encoder.linear1`` / ``linear2`` / ``norm`` (continuous value encoder, values clamped at 512),
* ``transformer_encoder.layers.{i}`` (``torch.nn.TransformerEncoderLayer``, batch first).

Input as in scGPT: per cell, the expressed genes found in ``vocab.json`` with their expression binned into
``n_bins`` per-cell quantile bins (zeros stay 0), a ``<cls>`` token first; the cell embedding is the
transformer output at ``<cls>``. The decoders of the checkpoint are not needed and are ignored; any missing
encoder weight is an error naming the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pertpipe.errors import ConfigError


def bin_expression(x: np.ndarray, n_bins: int) -> np.ndarray:
    """scGPT's per-cell binning: non-zero values -> quantile bins 1..n_bins-1; zeros stay 0."""
    out = np.zeros_like(x, dtype=np.int64)
    for i in range(x.shape[0]):
        nz = x[i] > 0
        if not nz.any():
            continue
        vals = x[i, nz]
        bins = np.quantile(vals, np.linspace(0, 1, n_bins - 1))
        out[i, nz] = np.digitize(vals, bins)  # 1 .. n_bins-1, as scGPT bins
    return out


class ScGPTEncoder:
    """Frozen scGPT encoder: ``embed(x_log1p [cells x genes]) -> [cells x embsize]``."""

    REQUIRED = ("encoder.embedding.weight", "encoder.enc_norm.weight", "value_encoder.linear1.weight",
                "value_encoder.linear2.weight", "value_encoder.norm.weight")

    def __init__(self, folder: str | os.PathLike, genes: list[str], *, device: str = "cpu", max_len: int = 1200) -> None:
        import torch
        from torch import nn

        folder = Path(folder)
        for name in ("args.json", "vocab.json", "best_model.pt"):
            if not (folder / name).exists():
                raise ConfigError(f"{folder}: scGPT checkpoint lacks {name}. Fix: point model_params.dygenept."
                                  "scgpt_checkpoint at a folder with args.json, vocab.json and best_model.pt")
        args = json.loads((folder / "args.json").read_text())
        vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text())
        try:
            d, heads, d_hid, layers = int(args["embsize"]), int(args["nheads"]), int(args["d_hid"]), int(args["nlayers"])
        except KeyError as exc:
            raise ConfigError(f"{folder}/args.json lacks {exc}; expected embsize, nheads, d_hid, nlayers") from exc
        self.n_bins = int(args.get("n_bins", 51))
        pad = args.get("pad_token", "<pad>")
        if "<cls>" not in vocab or pad not in vocab:
            raise ConfigError(f"{folder}/vocab.json lacks '<cls>' or '{pad}'")
        self.cls_id, self.pad_id = vocab["<cls>"], vocab[pad]
        self.pad_value = float(args.get("pad_value", -2))
        self.max_len = max_len
        self.device = device
        self.gene_pos = np.array([i for i, g in enumerate(genes) if g in vocab], dtype=np.int64)
        self.gene_ids = np.array([vocab[genes[i]] for i in self.gene_pos], dtype=np.int64)
        if len(self.gene_pos) == 0:
            raise ConfigError(f"{folder}/vocab.json shares no gene with the dataset's universe")
        self.coverage = len(self.gene_pos) / max(1, len(genes))

        class GeneEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(len(vocab), d, padding_idx=vocab[pad])
                self.enc_norm = nn.LayerNorm(d)

            def forward(self, ids):
                return self.enc_norm(self.embedding(ids))

        class ContinuousValueEncoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear1 = nn.Linear(1, d)
                self.activation = nn.ReLU()
                self.linear2 = nn.Linear(d, d)
                self.norm = nn.LayerNorm(d)

            def forward(self, v):
                v = torch.clamp(v.unsqueeze(-1), max=512)
                return self.norm(self.linear2(self.activation(self.linear1(v))))

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = GeneEncoder()
                self.value_encoder = ContinuousValueEncoder()
                layer = nn.TransformerEncoderLayer(d, heads, d_hid, dropout=0.0, batch_first=True)
                self.transformer_encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

            def forward(self, ids, vals, pad_mask):
                h = self.encoder(ids) + self.value_encoder(vals)
                return self.transformer_encoder(h, src_key_padding_mask=pad_mask)[:, 0, :]

        self.net = Net()
        from pertpipe.io import load_torch

        state = load_torch(folder / "best_model.pt")  # a third party's file: tensors only, never pickled code
        state = state.get("model_state_dict", state) if isinstance(state, dict) else state
        missing = [k for k in self.REQUIRED if k not in state]
        own = self.net.state_dict()
        missing += [k for k in own if k.startswith("transformer_encoder.") and k not in state]
        if missing:
            raise ConfigError(f"{folder}/best_model.pt lacks scGPT encoder weights {missing[:5]}. Fix: use a "
                              "checkpoint saved by scGPT's TransformerModel (fast-transformer Wqkv checkpoints "
                              "are not supported)")
        self.net.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
        self.net.to(device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.dim = d

    def embed(self, x: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        import torch

        x = np.asarray(x)[:, self.gene_pos]
        binned = bin_expression(x, self.n_bins)
        out = np.zeros((x.shape[0], self.dim), dtype=np.float32)
        for s in range(0, x.shape[0], batch_size):
            rows = binned[s:s + batch_size]
            toks, vals = [], []
            for r in rows:
                nz = np.flatnonzero(r)
                if len(nz) > self.max_len - 1:  # keep the most expressed genes (stable order)
                    nz = np.sort(nz[np.argsort(-r[nz], kind="stable")[: self.max_len - 1]])
                toks.append(np.concatenate([[self.cls_id], self.gene_ids[nz]]))
                vals.append(np.concatenate([[0.0], r[nz].astype(np.float32)]))
            L = max(len(t) for t in toks)
            ids = np.full((len(toks), L), self.pad_id, dtype=np.int64)
            vv = np.full((len(toks), L), self.pad_value, dtype=np.float32)
            for i, (t, v) in enumerate(zip(toks, vals)):
                ids[i, :len(t)], vv[i, :len(v)] = t, v
            ids_t = torch.tensor(ids, device=self.device)
            with torch.no_grad():
                emb = self.net(ids_t, torch.tensor(vv, device=self.device), ids_t == self.pad_id)
            out[s:s + len(rows)] = emb.float().cpu().numpy()
        return out


def write_tiny_checkpoint(folder: str | os.PathLike, genes: list[str], *, embsize: int = 16, nheads: int = 2,
                          d_hid: int = 32, nlayers: int = 2, n_bins: int = 11, seed: int = 0) -> dict[str, Any]:
    """A randomly initialised checkpoint in scGPT's format (tests, smoke runs): the key names scGPT saves."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<cls>": 1, "<eoc>": 2, **{g: i + 3 for i, g in enumerate(genes)}}
    args = {"embsize": embsize, "nheads": nheads, "d_hid": d_hid, "nlayers": nlayers, "n_bins": n_bins,
            "pad_token": "<pad>", "pad_value": -2, "input_emb_style": "continuous", "dropout": 0.2}
    state = {"encoder.embedding.weight": torch.randn(len(vocab), embsize),
             "encoder.enc_norm.weight": torch.ones(embsize), "encoder.enc_norm.bias": torch.zeros(embsize)}
    for name, mod in (("linear1", nn.Linear(1, embsize)), ("linear2", nn.Linear(embsize, embsize))):
        state[f"value_encoder.{name}.weight"], state[f"value_encoder.{name}.bias"] = mod.weight.data, mod.bias.data
    state["value_encoder.norm.weight"], state["value_encoder.norm.bias"] = torch.ones(embsize), torch.zeros(embsize)
    layer = nn.TransformerEncoderLayer(embsize, nheads, d_hid, batch_first=True)
    enc = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
    for k, v in enc.state_dict().items():
        state[f"transformer_encoder.{k}"] = v
    state["decoder.fc.0.weight"] = torch.randn(embsize, embsize)  # present in real checkpoints; ignored
    (folder / "args.json").write_text(json.dumps(args))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    torch.save(state, folder / "best_model.pt")
    return args
