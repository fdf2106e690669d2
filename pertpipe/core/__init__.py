"""The shared floor every other package stands on: hyperparameter dataclasses (:mod:`.params`), the training loop
and its checkpoints (:mod:`.training`, :mod:`.distributed`), network layers (:mod:`.layers`), PCA (:mod:`.pca`),
distances between cell sets (:mod:`.distances`), streamed h5ad I/O (:mod:`.h5io`), and the numerical kernels more
than one package needs: chunked group sums (:mod:`.groups`), the facet kNN mix (:mod:`.knn`) and the ridge solve
(:mod:`.ridge`). Nothing here imports a package above it (data, knowledge, models, evaluation, spatial, tasks)."""
