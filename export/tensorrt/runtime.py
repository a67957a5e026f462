"""Finding TensorRT and a GPU, with a clear message where either is missing."""

from __future__ import annotations

from sam2_triton.errors import TensorRTUnavailableError

INSTALL_HINT = (
    "install it on a machine with an NVIDIA GPU: pip install 'sam2-triton[tensorrt]' "
    "(TensorRT 10), or use the NGC container nvcr.io/nvidia/tensorrt"
)


def import_tensorrt():
    """The `tensorrt` module, or TensorRTUnavailableError saying why not."""
    try:
        import tensorrt as trt
    except Exception as exc:  # absent, or a registry stub that fails on import
        raise TensorRTUnavailableError(
            f"TensorRT is not available ({exc}); {INSTALL_HINT}"
        ) from None
    if not hasattr(trt, "Builder"):
        raise TensorRTUnavailableError(
            f"the installed 'tensorrt' package is incomplete; {INSTALL_HINT}"
        )
    return trt


_LOGGER = None


def tensorrt_logger():
    """The one TensorRT logger of this process (TensorRT keeps a single global logger)."""
    global _LOGGER
    if _LOGGER is None:
        trt = import_tensorrt()
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def require_gpu() -> str:
    """Name of CUDA device 0, or TensorRTUnavailableError where no NVIDIA GPU is usable."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "no NVIDIA GPU is visible (torch.cuda.is_available() is False): TensorRT engines are "
            "built and run on the GPU they serve on"
        )
    return torch.cuda.get_device_name(0)


def tensorrt_unavailable_reason() -> str:
    """Empty when TensorRT and a GPU are both usable, else the reason (for test skips)."""
    try:
        import_tensorrt()
        require_gpu()
    except TensorRTUnavailableError as exc:
        return str(exc)
    return ""
