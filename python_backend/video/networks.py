"""The four networks a video tracker calls, behind one small protocol over device tensors.

Tensor names are those of the I/O contract (export/contract.py); every tensor is a torch tensor
on the networks' `device`, in the contract's dtype, and stays there: no network call copies its
inputs or outputs through the host. Inputs may be broadcast views (`Tensor.expand`, stride 0 on
the batch axis) where the tracker shares one frame's features between objects: an
implementation that needs dense memory makes them contiguous itself. Outputs are float32.

Implementations, one per runtime of configs/profiles.yaml (`video_networks` picks one):

* `OnnxVideoNetworks`: the exported graphs with ONNX Runtime in this process; numpy views of
  CPU tensors on the CPU provider, I/O binding to torch CUDA memory on the CUDA provider;
* `TorchVideoNetworks`: the export's own modules in PyTorch, at fp32 / tf32 / bf16 / fp16;
* `TensorrtVideoNetworks`: the TensorRT plans, on torch CUDA memory and torch's stream;
* `triton_io.BlsVideoNetworks`: BLS calls to the served network models (DLPack in and out).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from sam2_triton.configs import RUNTIMES
from sam2_triton.errors import ConfigError, ExportError
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.onnx_networks import validate_inputs
from sam2_triton.python_backend.video.device import resolve_device

Tensors = Mapping[str, torch.Tensor]


class VideoNetworks(Protocol):
    device: torch.device

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image [B,3,1024,1024] -> image_embed (raw), high_res_feats_0, high_res_feats_1."""
        ...

    def decode(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        """mask_decoder inputs -> masks, iou_scores, object_pointers, object_score_logits."""
        ...

    def encode_memory(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        """memory_encoder inputs -> memory_features."""
        ...

    def attend(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        """memory_attention inputs -> conditioned_features."""
        ...


class _ByNetwork(abc.ABC):
    """The four protocol methods over one `run(network, inputs)`."""

    @abc.abstractmethod
    def run(self, network: str, inputs: Tensors) -> dict[str, torch.Tensor]:
        """The outputs of `network` (a contract name) for `inputs`."""

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.run("image_encoder", {"image": image})

    def decode(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        return self.run("mask_decoder", inputs)

    def encode_memory(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        return self.run("memory_encoder", inputs)

    def attend(self, inputs: Tensors) -> dict[str, torch.Tensor]:
        return self.run("memory_attention", inputs)


# torch dtypes the contract's numpy dtype names correspond to.
TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
_NUMPY_DTYPES = {dtype: np.dtype(name) for name, dtype in TORCH_DTYPES.items()}


def contract_sizes(network: str, inputs: Tensors) -> dict[str, int]:
    """Check names, dtypes and shapes of torch `inputs` against the contract of `network`
    (InputError where they break it); the sizes of its dynamic axes.

    The check is onnx_networks.validate_inputs', run on zero-stride numpy stand-ins of the
    tensors' dtype and shape (nothing is read or copied, wherever the tensors live)."""
    stand_ins = {}
    for name, tensor in inputs.items():
        dtype = _NUMPY_DTYPES.get(tensor.dtype)
        if dtype is None:
            raise InputError(f"{network}.{name}: dtype {tensor.dtype} is not in the contract")
        stand_ins[name] = np.broadcast_to(np.zeros((), dtype), tuple(tensor.shape))
    return validate_inputs(CONTRACTS[network], stand_ins)


def output_shapes(network: str, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """Shapes of `network`'s outputs for the dynamic-axis `sizes` of its inputs."""
    return {spec.name: spec.concrete_shape(dict(sizes)) for spec in CONTRACTS[network].outputs}


def host_array(tensor: torch.Tensor) -> np.ndarray:
    """A dense numpy view of a CPU tensor (copied only where it is a broadcast view)."""
    return np.ascontiguousarray(tensor.detach().numpy())


class OnnxVideoNetworks(_ByNetwork):
    """VideoNetworks with ONNX Runtime: numpy views of CPU tensors on the CPU provider; on the
    CUDA provider (`providers=[("CUDAExecutionProvider", {"device_id": i})]`), inputs bound by
    their CUDA addresses and outputs written into torch tensors allocated on cuda:i (I/O
    binding), so no tensor passes through the host."""

    def __init__(self, export_dir: os.PathLike, **session_options) -> None:
        from sam2_triton.python_backend.onnx_networks import OnnxNetworks

        self.networks = OnnxNetworks(export_dir, **session_options)
        self.metadata = self.networks.metadata
        cuda = {_cuda_device_id(session) for session in self.networks.sessions.values()}
        if len(cuda) != 1:
            raise ConfigError("the ONNX Runtime sessions run on different providers")
        [device_id] = cuda
        self.device = (
            torch.device("cpu") if device_id is None else resolve_device(f"cuda:{device_id}")
        )

    def run(self, network: str, inputs: Tensors) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            return self.run_bound(network, inputs)
        arrays = {name: host_array(tensor) for name, tensor in inputs.items()}
        outputs = self.networks.run(network, **arrays)
        return {name: torch.from_numpy(array) for name, array in outputs.items()}

    def run_bound(self, network: str, inputs: Tensors) -> dict[str, torch.Tensor]:
        """One run with I/O binding: the tensors' memory on `device` is read and written in
        place (the path of the CUDA provider; on the CPU provider it runs the same binding)."""
        session = self.networks.sessions[network]
        binding = session.io_binding()
        # `dense` holds the bound inputs' memory until the run is over
        dense, outputs = bind_tensors(binding, network, inputs, self.device)
        if self.device.type == "cuda":
            # ONNX Runtime reads the inputs on its own stream: what torch queued must be done.
            # The run returns once the outputs are written (it synchronizes its stream).
            torch.cuda.current_stream(self.device).synchronize()
        session.run_with_iobinding(binding, self.networks.run_options)
        return outputs


def bind_tensors(
    binding: Any, network: str, inputs: Tensors, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Bind `inputs` (made dense on `device`) and new float32 output tensors of the contract's
    shapes to an ONNX Runtime IOBinding by address; (dense inputs, outputs)."""
    sizes = contract_sizes(network, inputs)
    index = device.index or 0
    dense = {name: tensor.to(device).contiguous() for name, tensor in inputs.items()}
    for name, tensor in dense.items():
        binding.bind_input(
            name=name,
            device_type=device.type,
            device_id=index,
            element_type=_NUMPY_DTYPES[tensor.dtype].type,
            shape=tuple(tensor.shape),
            buffer_ptr=tensor.data_ptr(),
        )
    outputs = {
        name: torch.empty(shape, dtype=torch.float32, device=device)
        for name, shape in output_shapes(network, sizes).items()
    }
    for name, tensor in outputs.items():
        binding.bind_output(
            name=name,
            device_type=device.type,
            device_id=index,
            element_type=np.float32,
            shape=tuple(tensor.shape),
            buffer_ptr=tensor.data_ptr(),
        )
    return dense, outputs


def _cuda_device_id(session: Any) -> int | None:
    """The CUDA device a session runs on, or None on the CPU provider."""
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return None
    options = session.get_provider_options().get("CUDAExecutionProvider", {})
    return int(options.get("device_id", 0))


class TorchVideoNetworks(_ByNetwork):
    """VideoNetworks with the export's own modules in PyTorch (torch_networks.TorchModules):
    built from `checkpoint` on `device`, run at `precision` ("fp32", "tf32", "bf16", "fp16";
    reduced precisions keep LayerNorm, softmax and rotary math in fp32), optionally through
    `torch.compile`. Inputs may be broadcast views; outputs are float32 on `device`."""

    def __init__(
        self,
        checkpoint: os.PathLike,
        model_name: str,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        from sam2_triton.python_backend.torch_networks import TorchModules

        self.modules = TorchModules(
            checkpoint, model_name, device=device, precision=precision, compile=compile
        )
        self.device = self.modules.device
        self.precision = precision

    def run(self, network: str, inputs: Tensors) -> dict[str, torch.Tensor]:
        contract_sizes(network, inputs)
        return self.modules.run(network, inputs)


class TensorrtVideoNetworks(_ByNetwork):
    """VideoNetworks with the TensorRT plans of `engine_dir` (export/tensorrt/builder.py) on a
    CUDA device: inputs and outputs are torch CUDA tensors bound by address
    (`set_tensor_address`), each network enqueued on torch's current stream
    (`execute_async_v3`), so calls order with the tracker's own torch work without a host sync.
    """

    def __init__(self, engine_dir: os.PathLike, device: str | torch.device = "cuda") -> None:
        from sam2_triton.export.tensorrt.builder import plan_path
        from sam2_triton.export.tensorrt.runtime import import_tensorrt, tensorrt_logger

        self.device = resolve_device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"TensorRT engines run on a CUDA device, not {self.device}")
        self.trt = import_tensorrt()
        runtime = self.trt.Runtime(tensorrt_logger())
        self.engines: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}
        with torch.cuda.device(self.device):
            for network in CONTRACTS:
                plan = plan_path(engine_dir, network)
                if not plan.is_file():
                    raise ExportError(f"{plan} not found: build the engines first")
                engine = runtime.deserialize_cuda_engine(Path(plan).read_bytes())
                if engine is None:
                    raise ExportError(
                        f"TensorRT could not load {plan} (built with another version or GPU?)"
                    )
                self.engines[network] = engine
                self.contexts[network] = engine.create_execution_context()

    def run(self, network: str, inputs: Tensors) -> dict[str, torch.Tensor]:
        sizes = contract_sizes(network, inputs)
        engine, context = self.engines[network], self.contexts[network]
        # Dense copies, outputs and the run all belong to torch's current stream, so the caching
        # allocator reuses their memory only after the engine has run.
        with torch.cuda.device(self.device):
            dense = {name: inputs[name].to(self.device).contiguous() for name in inputs}
            for name, tensor in dense.items():
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    raise InputError(
                        f"{network}.{name}: shape {tuple(tensor.shape)} is outside the "
                        "engine's optimization profile"
                    )
                context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name, shape in output_shapes(network, sizes).items():
                made = tuple(context.get_tensor_shape(name))
                if made != shape:
                    raise ExportError(f"{network}.{name}: the engine makes {made}, not {shape}")
                dtype = _tensorrt_torch_dtype(self.trt, engine.get_tensor_dtype(name))
                outputs[name] = torch.empty(shape, dtype=dtype, device=self.device)
                context.set_tensor_address(name, outputs[name].data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution of {network} failed; see its log")
        return {name: tensor.float() for name, tensor in outputs.items()}


def _tensorrt_torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    known = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    if hasattr(trt, "bfloat16"):
        known[trt.bfloat16] = torch.bfloat16
    if dtype not in known:
        raise ExportError(f"engine output dtype {dtype} is not one the contract uses")
    return known[dtype]


def video_networks(
    runtime: str,
    export_dir: os.PathLike,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    checkpoint: os.PathLike | None = None,
    engine_dir: os.PathLike | None = None,
    compile: bool = False,
    session_options: Mapping[str, Any] | None = None,
) -> VideoNetworks:
    """The VideoNetworks of a profile's `runtime` (configs.RUNTIMES) on `device`.

    - "onnxruntime": the graphs of `export_dir`; the CPU provider on "cpu", the CUDA provider
      with I/O binding on a CUDA device; fp32 only (the graphs are fp32).
    - "torch": the modules built from `checkpoint` (the model named in `export_dir`'s
      metadata.json) at `precision`, optionally compiled.
    - "tensorrt": the plans of `engine_dir` (`sam2-triton build-engines` writes them to
      <export_dir>/engines/<profile>); the precision is the one they were built with, checked
      against `precision`.

    `session_options` go to ONNX Runtime (intra_op_threads, allow_spinning, ...).
    """
    from sam2_triton.export.metadata import load_metadata

    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r}: expected one of {RUNTIMES}")
    target = resolve_device(device)
    if runtime == "onnxruntime":
        if precision != "fp32":
            raise ConfigError(f"ONNX Runtime runs the fp32 graphs; precision {precision!r}")
        options = dict(session_options or {})
        if target.type == "cuda":
            index = target.index if target.index is not None else torch.cuda.current_device()
            options["providers"] = [("CUDAExecutionProvider", {"device_id": index})]
        return OnnxVideoNetworks(export_dir, **options)
    if runtime == "torch":
        if checkpoint is None:
            raise ConfigError("runtime 'torch' builds the networks from a checkpoint: give one")
        model_name = load_metadata(export_dir)["model"]["name"]
        return TorchVideoNetworks(checkpoint, model_name, target, precision, compile)
    if engine_dir is None:
        raise ConfigError("runtime 'tensorrt' runs built engines: give their directory")
    engines = Path(engine_dir)
    built = _engine_precisions(engines)
    if built and built != {precision}:
        raise ConfigError(
            f"the engines in {engines} were built in {sorted(built)}, not {precision!r}"
        )
    return TensorrtVideoNetworks(engines, target)


def _engine_precisions(engine_dir: Path) -> set[str]:
    """Precisions recorded beside the plans (plan.json files written by the builder)."""
    import json

    from sam2_triton.export.tensorrt.builder import plan_metadata_path

    found = set()
    for network in CONTRACTS:
        path = plan_metadata_path(engine_dir, network)
        if path.is_file():
            found.add(json.loads(path.read_text(encoding="utf-8"))["precision"])
    return found
