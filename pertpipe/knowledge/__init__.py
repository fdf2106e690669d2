"""Gene knowledge: annotations (NCBI/GO readers), gene text, functional facets (GO or LLM), text embeddings."""
