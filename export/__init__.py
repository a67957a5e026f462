"""Split an official SAM 2 checkpoint into four networks, export them to ONNX, build TensorRT
engines.

- `checkpoints`: download (with checksum) and load the official checkpoint format.
- `networks/`: one `nn.Module` per exported graph, built from the official modules' weights.
- `contract`: the written I/O contract of the four graphs (names, dtypes, shapes, dynamic axes).
- `onnx_export`: writes the graphs and `metadata.json`.
- `lint`: TensorRT compatibility lint of exported graphs.
- `tensorrt/`: engine builder and verifier.
"""
