"""Which part of a YOLO export stays out of INT8: its head.

The last top-level block of a YOLO network (Detect: `/model.22/` in YOLOv8s, `/model.24/` in
YOLOv5s) decodes boxes to input pixels (hundreds) and scores to 0..1 in one output tensor; one
INT8 scale cannot hold both, and quantized whole the fall detector finds nothing. Both INT8
paths keep it in floating point: TensorRT's build (FP16, per layer) and ONNX Runtime's
(edge/export/quantize.py). One rule, stated here.
"""


import re
from typing import Iterable

_BLOCK = re.compile(r"^/?model\.(\d+)[./]")


def head_prefix(node_names: Iterable[str]) -> str:
    """The name prefix of the head's nodes or layers, e.g. "/model.22/"; "" when the names do not
    follow the `/model.<i>/` scopes that PyTorch's ONNX export gives YOLO networks."""
    blocks = [int(match.group(1)) for match in map(_BLOCK.match, node_names) if match]
    return f"/model.{max(blocks)}/" if blocks else ""


def in_head(name: str, prefix: str) -> bool:
    return bool(prefix) and name.startswith(prefix)

