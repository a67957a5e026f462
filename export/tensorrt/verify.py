"""Compare TensorRT engines with ONNX Runtime (CPU, fp32) on random valid inputs.

For each network and each of the profile's min / opt / max shapes, both run the same inputs and
the error of every output is reported: relative L2 error ||trt - onnx|| / ||onnx|| and the
largest absolute difference. Buffers live in torch CUDA tensors (torch is installed wherever
engines are built).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sam2_triton.configs import NETWORKS, DeploymentProfile
from sam2_triton.configs.precision_bounds import PRECISION_BOUNDS
from sam2_triton.errors import ExportError
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.sample_inputs import random_inputs
from sam2_triton.export.tensorrt.builder import plan_path
from sam2_triton.export.tensorrt.profiles import sizes_at
from sam2_triton.export.tensorrt.runtime import import_tensorrt, require_gpu, tensorrt_logger

# Largest relative L2 error accepted per precision (ONNX Runtime fp32 is the reference): the
# bounds every runtime is held to (configs/precision_bounds.py).
DEFAULT_TOLERANCE = {
    precision: bound.max_relative_error for precision, bound in PRECISION_BOUNDS.items()
}
SHAPE_POINTS = ("min", "opt", "max")
# At the "max" point, batch-like axes are capped: the ONNX Runtime reference runs on the CPU and
# memory attention at full batch x full memory needs tens of GiB there. Every other axis (points,
# memory frames, pointers, mask size) is checked at its maximum.
BATCH_AXES = ("batch", "num_images", "num_prompts")
MAX_POINT_BATCH = 2


@dataclass
class OutputError:
    network: str
    shape_point: str
    output: str
    relative_error: float
    max_abs_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.relative_error)) and self.relative_error <= self.tolerance


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    diff = actual.astype(np.float64) - reference
    return float(np.linalg.norm(diff)) / max(float(np.linalg.norm(reference)), 1e-30)


class EngineRunner:
    """Runs one TensorRT plan on CUDA device 0 (TensorRT 10 tensor-address API)."""

    def __init__(self, plan: os.PathLike) -> None:
        import torch

        self.trt = import_tensorrt()
        self.torch = torch
        runtime = self.trt.Runtime(tensorrt_logger())
        self.engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise ExportError(
                f"TensorRT could not load {plan} (built with another version or GPU?)"
            )
        self.context = self.engine.create_execution_context()

    def run(
        self, inputs: dict[str, np.ndarray], output_names: Iterable[str]
    ) -> dict[str, np.ndarray]:
        torch, trt = self.torch, self.trt
        keep = []
        for name, array in inputs.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array)).cuda()
            keep.append(tensor)
            if not self.context.set_input_shape(name, tuple(array.shape)):
                raise ExportError(f"{name}: shape {array.shape} is outside the engine's profile")
            if not self.context.set_tensor_address(name, tensor.data_ptr()):
                raise ExportError(f"TensorRT rejected the buffer of {name}")
        outputs = {}
        for name in output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if -1 in shape:
                raise ExportError(f"TensorRT could not infer the shape of output {name}")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            tensor = torch.empty(shape, dtype=_TORCH_DTYPES[dtype.name](torch), device="cuda")
            outputs[name] = tensor
            self.context.set_tensor_address(name, tensor.data_ptr())
        stream = torch.cuda.Stream()  # TensorRT warns on the legacy default stream
        stream.wait_stream(torch.cuda.current_stream())  # the input copies above
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed; see the TensorRT log above")
        stream.synchronize()
        return {name: t.float().cpu().numpy() for name, t in outputs.items()}


_TORCH_DTYPES = {
    "float32": lambda torch: torch.float32,
    "float16": lambda torch: torch.float16,
    "int32": lambda torch: torch.int32,
    "int64": lambda torch: torch.int64,
    "bool": lambda torch: torch.bool,
}


def verify_engines(
    export_dir: os.PathLike,
    engine_dir: os.PathLike,
    profile: DeploymentProfile,
    *,
    networks: Iterable[str] = NETWORKS,
    tolerance: float | None = None,
    seed: int = 0,
) -> list[OutputError]:
    """Errors of every output of every engine at the profile's min / opt / max shapes."""
    from sam2_triton.python_backend.onnx_networks import OnnxNetworks

    require_gpu()
    tolerance = DEFAULT_TOLERANCE[profile.precision] if tolerance is None else tolerance
    networks = list(networks)
    reference = OnnxNetworks(export_dir, networks=networks)
    rng = np.random.default_rng(seed)
    report = []
    for network in networks:
        contract = CONTRACTS[network]
        plan = plan_path(engine_dir, network)
        if not plan.is_file():
            raise ExportError(f"{plan} not found: build the engines first")
        runner = EngineRunner(plan)
        for which, point in enumerate(SHAPE_POINTS):
            sizes = sizes_at(contract, profile, which)
            if point == "max":
                sizes = {
                    a: min(v, MAX_POINT_BATCH) if a in BATCH_AXES else v for a, v in sizes.items()
                }
            inputs = random_inputs(contract, sizes, rng)
            expected = reference.run(network, **inputs)
            actual = runner.run(inputs, contract.output_names)
            for name in contract.output_names:
                report.append(
                    OutputError(
                        network,
                        point,
                        name,
                        relative_error(actual[name], expected[name]),
                        float(np.max(np.abs(actual[name].astype(np.float64) - expected[name]))),
                        tolerance,
                    )
                )
    return report


def write_report(report: list[OutputError], path: os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump([dict(asdict(e), ok=e.ok) for e in report], f, indent=1)


def format_report(report: list[OutputError]) -> str:
    lines = [f"{'network':18} {'shapes':6} {'output':22} {'rel. L2':>10} {'max abs':>10}  ok"]
    for e in report:
        lines.append(
            f"{e.network:18} {e.shape_point:6} {e.output:22} {e.relative_error:10.2e} "
            f"{e.max_abs_error:10.2e}  {'yes' if e.ok else 'NO'}"
        )
    return "\n".join(lines)
