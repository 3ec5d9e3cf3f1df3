"""Pure functions that turn images into model tensors and model outputs into boxes and people."""
