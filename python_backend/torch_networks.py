"""Run the four networks in PyTorch from an official checkpoint (the `torch` runtime).

The same `nn.Module` wrappers that are exported to ONNX (`export/networks/`), built from the
checkpoint and run eagerly, so the results equal the exported graphs' definition.
`TorchModules` is the one place they are built and run: on a device, at a precision, optionally
compiled, torch tensors in and float32 torch tensors out. `TorchNetworks` wraps it for the image
path's Python-backend runner models (numpy in and out, profiles whose runtime is `torch`); the
video path wraps it as `TorchVideoNetworks` (python_backend/video/networks.py).

Precision follows the TensorRT builder (export/tensorrt/precision.py): "bf16" and "fp16" run
under `torch.autocast` with LayerNorm, softmax and the rotary math kept in fp32 (see
`fp32_islands`); "tf32" allows TF32 matrix math on CUDA; "fp32" is strict fp32 (TF32 off).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam2_triton.configs import PRECISIONS, get_model
from sam2_triton.errors import ConfigError
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.networks import NETWORK_CLASSES
from sam2_triton.export.networks.rotary import AxialRotary
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.onnx_networks import validate_inputs

# Reduced precisions: the dtype autocast runs matrix products and convolutions in.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Functions kept in fp32 under autocast. CUDA autocast already runs them in fp32; CPU autocast
# runs them in the dtype of their input (bf16 / fp16 after a matrix product), so on other
# devices `fp32_islands` casts their inputs up.
FP32_FUNCTIONS = frozenset(
    {torch.softmax, torch.Tensor.softmax, F.softmax, F.layer_norm, torch.layer_norm, F.group_norm}
)


def fp32_module_types() -> tuple[type[nn.Module], ...]:
    """Modules whose whole forward runs in fp32 under reduced precision: LayerNorm (SAM 2's
    LayerNorm2d is written out as mean / pow / sqrt, which autocast leaves in the input's
    dtype) and the rotary encoding (TensorRT pins the same layers, by their ONNX scopes)."""
    from sam2.modeling.sam2_utils import LayerNorm2d

    return (nn.LayerNorm, LayerNorm2d, AxialRotary)


def _float32(value: object) -> object:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def _float32_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return tuple(_float32(a) for a in args), {k: _float32(v) for k, v in kwargs.items()}


def _float32_inputs(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook (with_kwargs): the module's floating inputs as fp32."""
    return _float32_arguments(args, kwargs)


class _Fp32Functions(torch.overrides.TorchFunctionMode):
    """Within: the floating inputs of FP32_FUNCTIONS are cast to fp32 (so they compute in it)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FP32_FUNCTIONS:
            args, kwargs = _float32_arguments(args, kwargs)
        return func(*args, **kwargs)


def keep_fp32_modules(module: nn.Module) -> int:
    """Make every `fp32_module_types` submodule of `module` cast its floating inputs to fp32
    (a forward pre-hook; the ops inside are not autocast ops, so they then compute in fp32).
    Returns the number of submodules hooked."""
    kinds = fp32_module_types()
    hooked = 0
    for submodule in module.modules():
        if isinstance(submodule, kinds):
            submodule.register_forward_pre_hook(_float32_inputs, with_kwargs=True)
            hooked += 1
    return hooked


@contextlib.contextmanager
def _cuda_tf32(enabled: bool) -> Iterator[None]:
    """TF32 matrix math and convolutions on or off for the duration (restored after)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def fp32_islands(device: torch.device) -> contextlib.AbstractContextManager:
    """What keeps FP32_FUNCTIONS in fp32 under autocast on `device`: nothing on CUDA (its
    autocast does), a torch-function mode elsewhere."""
    return contextlib.nullcontext() if device.type == "cuda" else _Fp32Functions()


def precision_context(device: torch.device, precision: str) -> contextlib.ExitStack:
    """The context a network call runs in for `precision` (one of configs.PRECISIONS)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {PRECISIONS}")
    stack = contextlib.ExitStack()
    if precision in AUTOCAST_DTYPES:
        stack.enter_context(torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]))
        stack.enter_context(fp32_islands(device))
    elif device.type == "cuda":
        stack.enter_context(_cuda_tf32(precision == "tf32"))
    return stack


def build_network_modules(
    checkpoint: os.PathLike, model_name: str, networks: Iterable[str], device: torch.device
) -> dict[str, nn.Module]:
    """The export's eval-mode modules of `networks`, built from `checkpoint` on the CPU (their
    constant tables are computed there) and moved to `device`."""
    from sam2_triton.export.checkpoints import build_sam2_model

    model = build_sam2_model(get_model(model_name), checkpoint=checkpoint)
    return {name: NETWORK_CLASSES[name](model).eval().to(device) for name in networks}


class TorchModules:
    """The networks of one checkpoint as modules on `device`, run at `precision`.

    `run(network, tensors)` takes the contract's inputs as torch tensors on `device` and returns
    its outputs as float32 torch tensors on `device`. `compile=True` runs each module through
    `torch.compile` (the first call of each shape compiles).
    """

    def __init__(
        self,
        checkpoint: os.PathLike,
        model_name: str,
        networks: Iterable[str] = tuple(CONTRACTS),
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        from sam2_triton.python_backend.video.device import resolve_device

        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}: expected one of {PRECISIONS}")
        self.device = resolve_device(device)
        self.precision = precision
        self.modules = build_network_modules(checkpoint, model_name, networks, self.device)
        if precision in AUTOCAST_DTYPES:
            for module in self.modules.values():
                keep_fp32_modules(module)
        self.callables: dict[str, Callable] = {
            name: torch.compile(module) if compile else module
            for name, module in self.modules.items()
        }

    def run(self, network: str, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        contract = CONTRACTS[network]
        missing = [n for n in contract.input_names if n not in inputs]
        if missing:
            raise InputError(f"{network}: missing inputs {missing}")
        args = [inputs[n] for n in contract.input_names]
        with torch.inference_mode(), precision_context(self.device, self.precision):
            outputs = self.callables[network](*args)
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return {name: out.float() for name, out in zip(contract.output_names, outputs)}


class TorchNetworks:
    """`TorchModules` with numpy in and out (the Python-backend runner models' interface)."""

    def __init__(
        self,
        checkpoint: os.PathLike,
        model_name: str,
        networks: Iterable[str] = tuple(CONTRACTS),
        device: str = "cuda",
        precision: str = "fp32",
    ) -> None:
        self.modules = TorchModules(checkpoint, model_name, networks, device, precision)
        self.device = self.modules.device

    def run(self, network: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        validate_inputs(CONTRACTS[network], inputs)
        tensors = {
            name: torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
            for name, array in inputs.items()
        }
        outputs = self.modules.run(network, tensors)
        return {name: out.cpu().numpy() for name, out in outputs.items()}
