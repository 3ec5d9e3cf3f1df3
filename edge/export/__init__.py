"""Turning checkpoints into deployable models: PyTorch -> ONNX (with a parity check) ->
TensorRT engine (FP16 / INT8 with calibration) plus its sidecar, and the CPU's INT8 ONNX.

PyTorch is only needed here (the `build` extra), never by the daemon."""
