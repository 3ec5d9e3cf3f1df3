"""Inference backends: run a model on a tensor. Picked by the `type` key of a model's config.

A backend is one file here named `<type>_backend.py` that defines a subclass of
InferenceBackend with `type_name = "<type>"`; nothing else needs to change to add one.
"""

from edge.backends.base import InferenceBackend, available_backends, create_backend

__all__ = ["InferenceBackend", "available_backends", "create_backend"]
