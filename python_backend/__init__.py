"""Plain Python used by the Triton models in model_repository/ (tested without Triton).

- `onnx_networks`: runs the four exported graphs with ONNX Runtime, checking inputs against
  the I/O contract.
"""
