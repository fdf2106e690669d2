"""Models: one interface (pertpipe.models.base) and a registry.

Every module of this package (and every installed ``pertpipe.models`` entry point) is imported here, so each
``@register_model`` class is available by name: adding a model is one module plus its name in config ``models:``.
"""

from pertpipe.models.base import MODELS, PerturbationModel, build_model, discover_models, get_model_class, load_model

discover_models()

__all__ = ["MODELS", "PerturbationModel", "build_model", "discover_models", "get_model_class", "load_model"]
