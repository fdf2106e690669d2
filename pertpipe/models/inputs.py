"""What a model reads besides the training split: declared by the model, derived into rule inputs, typed in ``fit``.

A model names the input kinds it reads in its class attribute ``inputs`` (or, where a hyperparameter decides,
:meth:`~pertpipe.models.base.PerturbationModel.reads`). Each kind is one entry of :data:`INPUT_KINDS`: the
:class:`ModelInputs` fields it fills and what they hold. ``rules/models.smk`` turns a model's kinds into the train
rule's input files, ``python -m pertpipe train`` takes them as ``--input field=path``, and ``fit`` receives one
:class:`ModelInputs`: so a model that reads existing kinds is one module, with no rule, script or runner to edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pertpipe.core.h5io import DEFAULT_CHUNK
from pertpipe.errors import ConfigError

ANNOTATION = "annotation"  # a path template meaning: the run's annotation file of that name (demo's own or download)


@dataclass(frozen=True)
class InputKind:
    name: str
    fields: tuple[str, ...]  # the ModelInputs fields it fills
    description: str
    paths: dict[str, str]  # field -> where the run has it: a template over {results} and {dataset}, or ANNOTATION


INPUT_KINDS: dict[str, InputKind] = {k.name: k for k in (
    InputKind("knowledge", ("knowledge",), "the knowledge stage's facet tensor (facet_embeddings.pt: genes x facets "
              "x dim)", {"knowledge": "{results}/{dataset}/knowledge/facet_embeddings.pt"}),
    InputKind("context_stats", ("context_stats",), "stage 1's per-context statistics (zscores.h5ad: baselines, mean "
              "shifts, z-scores)", {"context_stats": "{results}/{dataset}/stage1/zscores.h5ad"}),
    InputKind("annotations", ("gene2go", "gene_info"), "NCBI gene2go and gene_info (GEARS's GO graph)",
              {"gene2go": ANNOTATION, "gene_info": ANNOTATION}),
)}


@dataclass(frozen=True)
class ModelInputs:
    """Everything ``fit`` reads: the training split, the declared inputs' files, and how to run."""

    train: str | Path
    knowledge: str | Path | None = None
    context_stats: str | Path | None = None
    gene2go: str | Path | None = None
    gene_info: str | Path | None = None
    chunk_size: int = DEFAULT_CHUNK
    threads: int = 1
    checkpoint: str | Path | None = None  # resume checkpoint of the shared training loop (kept until the model is saved)

    def need(self, name: str, model: str) -> Any:
        """Input field ``name`` (a path; tests may hand an in-memory object), or a clear error when the run did not
        provide it."""
        value = getattr(self, name)
        if value is None:
            kind = next((k.name for k in INPUT_KINDS.values() if name in k.fields), name)
            raise ConfigError(f"model {model} reads {name} (input kind '{kind}') but the run gave none. Fix: declare "
                              f"'{kind}' in the model's `inputs` so the rule passes it")
        return value


def file_fields() -> list[str]:
    """The :class:`ModelInputs` fields that hold input files (the declared kinds')."""
    return [f for k in INPUT_KINDS.values() for f in k.fields]


def check_kinds(model: str, kinds: tuple[str, ...] | list[str]) -> None:
    unknown = sorted(set(kinds) - set(INPUT_KINDS))
    if unknown:
        raise ConfigError(f"model {model} declares unknown input kind(s) {unknown}. Fix: use {sorted(INPUT_KINDS)} "
                          "(or add an InputKind to pertpipe/models/inputs.py)")
