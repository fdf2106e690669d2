"""Rule labels_standardize: PerturbQA label files (one DE + one direction CSV per line) -> labels.h5ad, with symbols
aligned to NCBI gene_info (aliases rescued, the rest reported) and the genes the knowledge stage describes."""
from pertpipe.data.labels import LineFiles, build_labels, label_genes, write_labels
from pertpipe.io import atomic_path, script_step, write_json

sm = snakemake  # noqa: F821
with script_step(sm.log[0], "labels_standardize", job=sm) as log:
    lines = [LineFiles(line, str(sm.input[f"{line}_de"]), str(sm.input[f"{line}_dir"])) for line in sm.params.lines]
    adata, report = build_labels(lines, gene_info=sm.input.get("gene_info") or None,
                                 max_unknown_fraction=sm.params.max_unknown_fraction)
    report.update(dataset=sm.params.dataset, provenance=sm.params.provenance)
    genes = label_genes(adata)
    write_labels(adata, sm.output.h5ad)
    with atomic_path(sm.output.genes) as tmp:
        tmp.write_text("\n".join(genes) + "\n")
    report["knowledge_genes"] = len(genes)
    write_json(report, sm.output.summary)
    log.info("%d rows x %d readout genes, %d labelled pairs; %d genes for the knowledge stage", report["rows"],
             report["readout_genes"], report["labelled_pairs"], len(genes))
