"""Models: one interface (pertpipe.models.base) and a registry; importing this package registers them all."""

from pertpipe.models import baselines, cfmvc, dygenept, linear  # noqa: F401  (registration side effect)
from pertpipe.models.base import MODELS, PerturbationModel, build_model, get_model_class, load_model

__all__ = ["MODELS", "PerturbationModel", "build_model", "get_model_class", "load_model"]
