"""Export the four networks of an official SAM 2 model to ONNX, plus `metadata.json`."""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from sam2.modeling.sam2_base import SAM2Base

import sam2_triton
from sam2_triton.configs import NETWORKS, ModelSpec
from sam2_triton.errors import ExportError
from sam2_triton.export import contract as C
from sam2_triton.export.metadata import (
    DECODER_SETTINGS,
    FORMAT_VERSION,
    MODEL_SETTINGS,
    write_metadata,
)
from sam2_triton.export.networks import NETWORK_CLASSES
from sam2_triton.export.sample_inputs import NUM_MASKMEM, TRACE_SIZES, random_inputs
from sam2_triton.export.tensorrt.precision import fp32_node_names

log = logging.getLogger(__name__)

OPSET = 17  # inside TensorRT 10's parser range (9..20) and ONNX Runtime's

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


def check_model_fits_contract(model: SAM2Base) -> None:
    """The contract's fixed sizes hold for every official SAM 2 / 2.1 size; refuse others."""
    expected = {
        "image_size": C.IMAGE_SIZE,
        "hidden_dim": C.HIDDEN_DIM,
        "mem_dim": C.MEMORY_DIM,
        "num_maskmem": NUM_MASKMEM,
        "image_size // backbone_stride": C.EMBED_SIZE,
    }
    actual = {
        "image_size": model.image_size,
        "hidden_dim": model.hidden_dim,
        "mem_dim": model.mem_dim,
        "num_maskmem": model.num_maskmem,
        "image_size // backbone_stride": model.image_size // model.backbone_stride,
    }
    wrong = [f"{k}={actual[k]} (expected {v})" for k, v in expected.items() if actual[k] != v]
    if wrong:
        raise ExportError(f"model does not fit the I/O contract: {', '.join(wrong)}")


def export_network(
    model: SAM2Base, name: str, path: os.PathLike, opset: int = OPSET
) -> onnx.ModelProto:
    """Export one network of `model` to `path` and check it against its contract."""
    contract = C.CONTRACTS[name]
    net = NETWORK_CLASSES[name](model).eval()
    rng = np.random.default_rng(0)
    example = random_inputs(contract, TRACE_SIZES, rng)
    args = tuple(torch.from_numpy(example[n]) for n in contract.input_names)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            net,
            args,
            str(path),
            input_names=contract.input_names,
            output_names=contract.output_names,
            dynamic_axes=contract.dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    _share_identical_constants(proto)
    _declare_fixed_output_dims(proto, contract)
    onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    check_graph_contract(proto, contract)
    return proto


def _share_identical_constants(proto: onnx.ModelProto, min_elements: int = 1024) -> int:
    """Turn large Constant nodes into initializers, one per distinct value.

    The tracer emits a fresh Constant for every use of a buffer (the rotary tables are used
    twice per layer), which multiplies the file size; TensorRT and ONNX Runtime read shared
    initializers once. Returns how many Constant nodes were replaced.
    """
    graph = proto.graph
    by_content: dict[tuple, str] = {}
    for init in graph.initializer:
        by_content.setdefault(_content_key(init), init.name)
    renamed = {}
    kept = []
    for node in graph.node:
        tensor = node.attribute[0].t if node.op_type == "Constant" and node.attribute else None
        if (
            tensor is None
            or node.attribute[0].name != "value"
            or int(np.prod(tensor.dims)) < min_elements
        ):
            kept.append(node)
            continue
        key = _content_key(tensor)
        if key not in by_content:
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            by_content[key] = tensor.name
        else:
            renamed[node.output[0]] = by_content[key]
    replaced = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(kept)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    return replaced


def _content_key(tensor: onnx.TensorProto) -> tuple:
    array = onnx.numpy_helper.to_array(tensor)
    return (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest())


def _declare_fixed_output_dims(proto: onnx.ModelProto, contract: C.GraphContract) -> bool:
    """Write the contract's fixed sizes into output dims the exporter left symbolic.

    The tracer cannot always infer sizes that come out of reshapes (it names them
    `Reshape..._dim_1`); the contract knows them. Sizes the exporter did infer are left alone
    and checked by `check_graph_contract`; the fidelity tests check the real output shapes.
    """
    changed = False
    specs = {t.name: t for t in contract.outputs}
    for value in proto.graph.output:
        spec = specs.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if spec is None or len(dims) != len(spec.shape):
            continue
        for dim, expected in zip(dims, spec.shape):
            if (
                isinstance(expected, int)
                and dim.dim_param
                and dim.dim_param not in contract.axis_names
            ):
                dim.Clear()
                dim.dim_value = expected
                changed = True
    return changed


def check_graph_contract(proto: onnx.ModelProto, contract: C.GraphContract) -> None:
    """Raise ExportError unless the graph's inputs and outputs are exactly the contract's."""
    problems = []
    for kind, actual, expected in (
        ("input", proto.graph.input, contract.inputs),
        ("output", proto.graph.output, contract.outputs),
    ):
        names = [v.name for v in actual]
        if names != [t.name for t in expected]:
            problems.append(f"{kind}s are {names}, contract says {[t.name for t in expected]}")
            continue
        for value, spec in zip(actual, expected):
            ttype = value.type.tensor_type
            dtype = _ONNX_DTYPES.get(ttype.elem_type, str(ttype.elem_type))
            dims = tuple(d.dim_param or d.dim_value for d in ttype.shape.dim)
            if dtype != spec.dtype:
                problems.append(f"{kind} {spec.name} has dtype {dtype}, contract says {spec.dtype}")
            if dims != spec.shape:
                problems.append(f"{kind} {spec.name} has shape {dims}, contract says {spec.shape}")
    if problems:
        raise ExportError(f"{contract.file} breaks its I/O contract: " + "; ".join(problems))


def build_metadata(
    model: SAM2Base,
    spec: ModelSpec,
    checkpoint: dict[str, Any],
    graphs: dict[str, onnx.ModelProto],
    opset: int,
) -> dict[str, Any]:
    import sam2

    decoder = model.sam_mask_decoder
    no_obj_ptr = getattr(model, "no_obj_ptr", None)
    downsample = getattr(model, "mask_downsample", None)
    return {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "sam2_triton": sam2_triton.__version__,
            "sam2": getattr(sam2, "__version__", _dist_version("sam2")),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "opset": opset,
        },
        "model": {
            "name": spec.name,
            "family": spec.family,
            "config": spec.config,
            "checkpoint": checkpoint,
        },
        "image": {
            "size": C.IMAGE_SIZE,
            "embed_size": C.EMBED_SIZE,
            "low_res_mask_size": C.LOW_RES_MASK_SIZE,
            "mean": list(C.IMAGE_MEAN),
            "std": list(C.IMAGE_STD),
            "resize": "bilinear, aspect ratio not kept, antialias as torchvision Resize",
        },
        "settings": {k: _plain(getattr(model, k)) for k in MODEL_SETTINGS if hasattr(model, k)},
        "decoder": {k: _plain(getattr(decoder, k)) for k in DECODER_SETTINGS},
        "constants": {
            "no_mem_embed": _floats(model.no_mem_embed),
            "no_obj_ptr": _floats(no_obj_ptr) if no_obj_ptr is not None else None,
            "mask_downsample_weight": _floats(downsample.weight)
            if downsample is not None
            else None,
            "mask_downsample_bias": _floats(downsample.bias) if downsample is not None else None,
        },
        "graphs": {
            name: {
                "file": C.CONTRACTS[name].file,
                "inputs": [_tensor_doc(t) for t in C.CONTRACTS[name].inputs],
                "outputs": [_tensor_doc(t) for t in C.CONTRACTS[name].outputs],
                "fp32_nodes": fp32_node_names(proto),
            }
            for name, proto in graphs.items()
        },
    }


def export_model(
    model: SAM2Base,
    spec: ModelSpec,
    output_dir: os.PathLike,
    *,
    checkpoint: dict[str, Any],
    opset: int = OPSET,
) -> Path:
    """Export the four networks of `model` into `output_dir`; returns the metadata path.

    `checkpoint` describes the weights (file, SHA-256, or random) for the metadata.
    """
    check_model_fits_contract(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    graphs = {}
    for name in NETWORKS:
        path = output_dir / C.CONTRACTS[name].file
        log.info("exporting %s -> %s", name, path)
        graphs[name] = export_network(model, name, path, opset)
    metadata = build_metadata(model, spec, checkpoint, graphs, opset)
    return write_metadata(output_dir, metadata)


def _tensor_doc(t: C.TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}


def _floats(t: torch.Tensor) -> list:
    return [float(v) for v in t.detach().float().flatten().tolist()]


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def _dist_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
