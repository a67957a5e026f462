"""TensorRT engines from the exported graphs: build (`builder`), compare with ONNX Runtime
(`verify`), and the fp32 layer choice for reduced precision (`precision`, no TensorRT needed)."""
