"""The video networks over torch tensors: every runtime gives the contract's outputs, float32, on
the requested device. PyTorch in fp32 equals ONNX Runtime; bf16 stays within the tolerance the
TensorRT engines are held to; broadcast-view inputs give the outputs of dense ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2_triton.errors import ConfigError
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.sample_inputs import random_inputs
from sam2_triton.export.tensorrt.runtime import tensorrt_unavailable_reason
from sam2_triton.export.tensorrt.verify import DEFAULT_TOLERANCE, relative_error
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.video.networks import (
    OnnxVideoNetworks,
    TorchVideoNetworks,
    contract_sizes,
    output_shapes,
    video_networks,
)

# Small sizes of every dynamic axis (the CPU runs each network once per precision).
SIZES = {
    "image_encoder": {"batch": 1},
    "mask_decoder": {"num_images": 1, "num_prompts": 2, "num_points": 3},
    "memory_encoder": {"batch": 2, "mask_height": 256, "mask_width": 256},
    "memory_attention": {"batch": 1, "num_memories": 2, "num_pointers": 3},
}
FP32_TOLERANCE = 1e-5  # relative L2 error of PyTorch fp32 against ONNX Runtime fp32


def contract_inputs(network: str, seed: int = 0, **sizes: int) -> dict[str, torch.Tensor]:
    arrays = random_inputs(
        CONTRACTS[network], {**SIZES[network], **sizes}, np.random.default_rng(seed)
    )
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


@pytest.fixture(scope="module")
def onnx_networks(exported) -> OnnxVideoNetworks:
    return OnnxVideoNetworks(exported.directory)


@pytest.fixture(scope="module")
def torch_networks(exported) -> dict[str, TorchVideoNetworks]:
    return {
        precision: TorchVideoNetworks(exported.checkpoint, exported.spec.name, "cpu", precision)
        for precision in ("fp32", "bf16")
    }


@pytest.fixture(scope="module")
def reference(onnx_networks) -> dict[str, tuple[dict, dict]]:
    """network -> (inputs, ONNX Runtime outputs)."""
    out = {}
    for network in CONTRACTS:
        inputs = contract_inputs(network)
        out[network] = (inputs, onnx_networks.run(network, inputs))
    return out


@pytest.mark.parametrize("network", list(CONTRACTS))
def test_onnx_outputs_are_float32_cpu_tensors_of_the_contract_shapes(reference, network):
    inputs, outputs = reference[network]
    expected = output_shapes(network, contract_sizes(network, inputs))
    assert list(outputs) == CONTRACTS[network].output_names == list(expected)
    for name, tensor in outputs.items():
        assert isinstance(tensor, torch.Tensor) and tensor.device == torch.device("cpu")
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == expected[name], name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("network", list(CONTRACTS))
def test_torch_networks_match_onnx_runtime(reference, torch_networks, network, precision):
    """fp32: the same numbers as ONNX Runtime; bf16: within the bf16 engines' tolerance."""
    inputs, expected = reference[network]
    outputs = torch_networks[precision].run(network, inputs)
    tolerance = FP32_TOLERANCE if precision == "fp32" else DEFAULT_TOLERANCE["bf16"]
    errors = {}
    for name, tensor in outputs.items():
        assert tensor.dtype == torch.float32 and tensor.device == torch.device("cpu"), name
        assert tensor.shape == expected[name].shape, name
        errors[name] = relative_error(tensor.numpy(), expected[name].numpy())
    print(f"{network} {precision}: relative L2 error {errors}")
    assert all(error <= tolerance for error in errors.values()), errors
    if precision == "bf16":  # it did run in reduced precision
        assert any(error > FP32_TOLERANCE for error in errors.values()), errors


def test_networks_follow_the_protocol(reference, onnx_networks, torch_networks):
    """encode / decode / encode_memory / attend are the four networks."""
    for networks in (onnx_networks, torch_networks["fp32"]):
        calls = {
            "image_encoder": lambda i, networks=networks: networks.encode(i["image"]),
            "mask_decoder": networks.decode,
            "memory_encoder": networks.encode_memory,
            "memory_attention": networks.attend,
        }
        for network, call in calls.items():
            inputs, expected = reference[network]
            outputs = call(inputs)
            assert list(outputs) == list(expected)
            for name, tensor in outputs.items():
                assert relative_error(tensor.numpy(), expected[name].numpy()) <= FP32_TOLERANCE


def shared_frame_inputs(network: str, objects: int) -> tuple[dict, dict]:
    """(inputs with one frame's features as broadcast views over `objects`, dense copies)."""
    if network == "mask_decoder":
        inputs = contract_inputs(network, num_images=1, num_prompts=objects)
        shared = ("image_embed", "high_res_feats_0", "high_res_feats_1")
    elif network == "memory_encoder":
        inputs = contract_inputs(network, batch=1)
        inputs.update(
            {
                k: v.expand(objects, *v.shape[1:]) + 0
                for k, v in inputs.items()
                if k != "image_embed"
            }
        )
        inputs["mask_logits"] = inputs["mask_logits"] + torch.arange(objects).reshape(-1, 1, 1, 1)
        shared = ("image_embed",)
    else:
        inputs = contract_inputs(network, batch=1)
        inputs.update(
            {
                k: v.expand(objects, *v.shape[1:]) + 0
                for k, v in inputs.items()
                if k != "current_features"
            }
        )
        inputs["memory_features"] = inputs["memory_features"] * torch.linspace(
            1, 2, objects
        ).reshape(-1, 1, 1, 1, 1)
        shared = ("current_features",)
    views = dict(inputs)
    for name in shared:
        views[name] = inputs[name].expand(objects, *inputs[name].shape[1:])
        assert views[name].stride(0) == 0
    dense = {name: tensor.contiguous() for name, tensor in views.items()}
    return views, dense


@pytest.mark.parametrize("network", ["mask_decoder", "memory_encoder", "memory_attention"])
def test_broadcast_views_give_the_outputs_of_dense_inputs(onnx_networks, torch_networks, network):
    views, dense = shared_frame_inputs(network, objects=2)
    for networks in (onnx_networks, torch_networks["fp32"]):
        from_views = networks.run(network, views)
        from_dense = networks.run(network, dense)
        for name, tensor in from_views.items():
            torch.testing.assert_close(tensor, from_dense[name], rtol=1e-6, atol=1e-6)
        # objects differ in their own inputs, so they must differ in the outputs
        first = next(iter(from_views.values()))
        assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("network", ["mask_decoder", "memory_encoder", "memory_attention"])
def test_io_binding_writes_outputs_into_torch_tensors(onnx_networks, reference, network):
    """The binding path the CUDA provider takes, run on the CPU provider: broadcast views bound
    densely, outputs written in place into torch tensors of the contract's shapes."""
    views, dense = shared_frame_inputs(network, objects=2)
    bound = onnx_networks.run_bound(network, views)
    for name, tensor in onnx_networks.run(network, dense).items():
        assert bound[name].dtype == torch.float32
        torch.testing.assert_close(bound[name], tensor, rtol=1e-6, atol=1e-6)
    inputs, expected = reference[network]
    for name, tensor in onnx_networks.run_bound(network, inputs).items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-6, atol=1e-6)


def test_inputs_are_checked_against_the_contract(torch_networks):
    inputs = contract_inputs("memory_encoder")
    with pytest.raises(InputError, match="is_mask_from_points: dtype int32, expected float32"):
        contract_sizes(
            "memory_encoder", {**inputs, "is_mask_from_points": torch.zeros(2, dtype=torch.int32)}
        )
    with pytest.raises(InputError, match="axis 'batch' is 3 here but 2"):
        torch_networks["fp32"].run(
            "memory_encoder", {**inputs, "is_mask_from_points": torch.zeros(3)}
        )
    with pytest.raises(InputError, match="bfloat16 is not in the contract"):
        contract_sizes(
            "memory_encoder", {**inputs, "mask_logits": torch.zeros(2, 1, 256, 256).bfloat16()}
        )
    assert output_shapes("memory_attention", {"batch": 3}) == {
        "conditioned_features": (3, 256, 64, 64)
    }


def test_reduced_precision_keeps_norms_softmax_and_rotary_in_fp32():
    """CPU autocast runs softmax and layer_norm in their input's dtype: fp32_islands casts them
    up; LayerNorm modules, SAM 2's LayerNorm2d and the rotary encoding get fp32 inputs."""
    from sam2.modeling.sam2_utils import LayerNorm2d

    from sam2_triton.export.networks.rotary import AxialRotary
    from sam2_triton.python_backend.torch_networks import keep_fp32_modules, precision_context

    cpu = torch.device("cpu")
    x = torch.randn(2, 8)
    with precision_context(cpu, "bf16"):
        low = F.linear(x, torch.randn(8, 8))
        assert low.dtype == torch.bfloat16  # autocast is on
        assert torch.softmax(low, -1).dtype == torch.float32
        assert low.softmax(-1).dtype == F.softmax(low, -1).dtype == torch.float32
        assert F.layer_norm(low, (8,)).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # without the islands
        assert torch.softmax(F.linear(x, torch.randn(8, 8)), -1).dtype == torch.bfloat16

    freqs = torch.polar(torch.ones(4, 2), torch.randn(4, 2))
    model = torch.nn.ModuleDict(
        {"norm": torch.nn.LayerNorm(4), "norm2d": LayerNorm2d(4), "rotary": AxialRotary(freqs)}
    )
    assert keep_fp32_modules(model) == 3
    seen = []
    for module in model.values():
        module.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    half = torch.randn(1, 4, 4).bfloat16()
    model["norm"](half)
    model["norm2d"](half.reshape(1, 4, 2, 2))
    model["rotary"](half, half)
    assert seen == [(torch.float32, torch.float32)] * 3


def test_fp32_precisions_set_tf32_for_the_call_only():
    """On CUDA, "fp32" turns TF32 off and "tf32" on for the call; the flags are restored."""
    from sam2_triton.python_backend.torch_networks import precision_context

    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    before = [f.allow_tf32 for f in flags]
    cuda = torch.device("cuda")  # the flags are process state: no CUDA device is needed
    for precision, inside in (("fp32", False), ("tf32", True)):
        with precision_context(cuda, precision):
            assert [f.allow_tf32 for f in flags] == [inside, inside]
        assert [f.allow_tf32 for f in flags] == before
    with pytest.raises(ConfigError, match="precision 'fp8'"):
        precision_context(cuda, "fp8")


def test_devices_and_runtimes_are_checked(exported):
    with pytest.raises(ConfigError, match="expected one of"):
        TorchVideoNetworks(exported.checkpoint, exported.spec.name, precision="int8")
    with pytest.raises(ConfigError, match="runtime 'cuda'"):
        video_networks("cuda", exported.directory)
    with pytest.raises(ConfigError, match="fp32 graphs"):
        video_networks("onnxruntime", exported.directory, precision="bf16")
    with pytest.raises(ConfigError, match="give one"):
        video_networks("torch", exported.directory)
    with pytest.raises(ConfigError, match="give their directory"):
        video_networks("tensorrt", exported.directory)
    with pytest.raises(ConfigError, match="CUDA device, not cpu"):
        video_networks("tensorrt", exported.directory, engine_dir=exported.directory)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            video_networks("onnxruntime", exported.directory, device="cuda")
    onnx = video_networks(
        "onnxruntime", exported.directory, session_options={"intra_op_threads": 1}
    )
    assert type(onnx) is OnnxVideoNetworks and onnx.device == torch.device("cpu")
    torch_cpu = video_networks(
        "torch", exported.directory, checkpoint=exported.checkpoint, precision="bf16"
    )
    assert type(torch_cpu) is TorchVideoNetworks
    assert torch_cpu.device == torch.device("cpu") and torch_cpu.precision == "bf16"


# -- GPU runtimes: run where a GPU (and TensorRT, ONNX Runtime's CUDA provider) are present ---

NO_CUDA = "" if torch.cuda.is_available() else "no CUDA device visible to torch"


def cuda_onnxruntime_missing() -> str:
    import onnxruntime as ort

    if NO_CUDA:
        return NO_CUDA
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return ""


def assert_same_as_cpu(networks, reference, tolerance: float) -> None:
    for network, (inputs, expected) in reference.items():
        outputs = networks.run(network, {k: v.cuda() for k, v in inputs.items()})
        for name, tensor in outputs.items():
            assert tensor.device.type == "cuda" and tensor.dtype == torch.float32, name
            error = relative_error(tensor.cpu().numpy(), expected[name].numpy())
            assert error <= tolerance, (network, name, error)


@pytest.mark.skipif(bool(cuda_onnxruntime_missing()), reason=cuda_onnxruntime_missing())
def test_onnxruntime_on_cuda_binds_torch_memory(exported, reference):
    networks = video_networks("onnxruntime", exported.directory, device="cuda")
    assert networks.device.type == "cuda"
    assert_same_as_cpu(networks, reference, DEFAULT_TOLERANCE["tf32"])


@pytest.mark.skipif(bool(NO_CUDA), reason=NO_CUDA)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_torch_on_cuda(exported, reference, precision):
    networks = video_networks(
        "torch",
        exported.directory,
        checkpoint=exported.checkpoint,
        device="cuda",
        precision=precision,
    )
    tolerance = DEFAULT_TOLERANCE["tf32" if precision == "fp32" else precision]
    assert_same_as_cpu(networks, reference, tolerance)


TENSORRT_MISSING = tensorrt_unavailable_reason()


@pytest.mark.skipif(bool(TENSORRT_MISSING), reason=f"needs TensorRT and a GPU: {TENSORRT_MISSING}")
@pytest.mark.tensorrt
def test_tensorrt_networks_match_onnx_runtime(exported, reference, tmp_path):
    from sam2_triton.configs import get_profile
    from sam2_triton.export.tensorrt.builder import build_engines

    profile = get_profile("gpu-fp32")
    build_engines(exported.directory, tmp_path, profile, workspace_gib=4)
    networks = video_networks(
        "tensorrt", exported.directory, engine_dir=tmp_path, device="cuda", precision="fp32"
    )
    assert_same_as_cpu(networks, reference, DEFAULT_TOLERANCE["fp32"])
