"""Build TensorRT engines from the exported ONNX graphs with TensorRT's Python API.

One engine per network, each with one optimization profile covering every dynamic axis (from
`configs/profiles.yaml`), the requested precision, and, for fp16 / bf16, the layers chosen by
`precision.fp32_node_names` pinned to fp32. A timing cache shared by the four builds makes
rebuilds fast. Each plan gets a JSON file beside it saying what it was built with and for.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sam2_triton.configs import NETWORKS, DeploymentProfile
from sam2_triton.errors import ConfigError, ExportError
from sam2_triton.export.checkpoints import sha256_file
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.metadata import load_metadata
from sam2_triton.export.tensorrt.profiles import profile_shapes
from sam2_triton.export.tensorrt.runtime import import_tensorrt, require_gpu, tensorrt_logger

log = logging.getLogger(__name__)

TIMING_CACHE_FILE = "timing.cache"
DEFAULT_WORKSPACE_GIB = 8.0


def plan_path(engine_dir: os.PathLike, network: str) -> Path:
    return Path(engine_dir) / f"{network}.plan"


def plan_metadata_path(engine_dir: os.PathLike, network: str) -> Path:
    return Path(engine_dir) / f"{network}.plan.json"


_ONNX_LAYER_METADATA = re.compile(r"\[ONNX Layer: (.*?)(?: \| .*)?\]$")


def layer_matches_nodes(
    layer_name: str, node_names: Iterable[str], layer_metadata: str = ""
) -> bool:
    """True if the TensorRT layer was made from one of the ONNX nodes `node_names`.

    TensorRT 10's parser records the node in the layer's metadata ("[ONNX Layer: <node>]"),
    which is exact. Without it, the layer name is used: the parser names a node's first layer
    after the node and further layers `<node>_<n>`, so trailing `_<n>` are stripped one at a time.
    """
    nodes = node_names if isinstance(node_names, (set, frozenset)) else set(node_names)
    match = _ONNX_LAYER_METADATA.match(layer_metadata or "")
    if match:
        return match.group(1) in nodes
    name = layer_name
    while True:
        if name in nodes:
            return True
        stripped = re.sub(r"_\d+$", "", name)
        if stripped == name:
            return False
        name = stripped


def build_engines(
    export_dir: os.PathLike,
    engine_dir: os.PathLike,
    profile: DeploymentProfile,
    *,
    networks: Iterable[str] = NETWORKS,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache: os.PathLike | None = None,
) -> list[Path]:
    """Build one plan per network into `engine_dir`; returns the plan paths."""
    if profile.runtime != "tensorrt":
        raise ConfigError(
            f"profile {profile.name!r} runs {profile.runtime}, not TensorRT; choose one of the "
            "gpu-fp32 / gpu-tf32 / gpu-fp16 / gpu-bf16 profiles"
        )
    trt = import_tensorrt()
    gpu = require_gpu()
    metadata = load_metadata(export_dir)
    engine_dir = Path(engine_dir)
    engine_dir.mkdir(parents=True, exist_ok=True)
    cache_path = Path(timing_cache) if timing_cache else engine_dir / TIMING_CACHE_FILE
    plans = []
    for network in networks:
        if network not in CONTRACTS:
            raise ConfigError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
        onnx_path = Path(export_dir) / CONTRACTS[network].file
        fp32_nodes = set(metadata["graphs"][network].get("fp32_nodes", []))
        plans.append(
            _build_one(
                trt,
                network,
                onnx_path,
                engine_dir,
                profile,
                fp32_nodes,
                workspace_gib,
                cache_path,
                gpu,
                metadata,
            )
        )
    return plans


def _build_one(
    trt,
    network: str,
    onnx_path: Path,
    engine_dir: Path,
    profile: DeploymentProfile,
    fp32_nodes: set,
    workspace_gib: float,
    cache_path: Path,
    gpu: str,
    metadata: dict[str, Any],
) -> Path:
    import torch

    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path} not found: export the model first")
    logger = tensorrt_logger()
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before TRT 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    net = builder.create_network(flags)
    parser = trt.OnnxParser(net, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    precision = profile.precision
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif precision == "tf32":
        config.set_flag(trt.BuilderFlag.TF32)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    pinned = 0
    if precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32_layers(trt, net, fp32_nodes)

    optimization_profile = builder.create_optimization_profile()
    shapes = profile_shapes(CONTRACTS[network], profile)
    for name, (low, opt, high) in shapes.items():
        optimization_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization_profile)

    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning(
            "timing cache %s is unusable (other GPU or TensorRT?); starting anew", cache_path
        )
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    log.info("building %s (%s, %d layers pinned to fp32)", network, precision, pinned)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(net, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build {network}; see the TensorRT log above")
    seconds = time.perf_counter() - started
    target = plan_path(engine_dir, network)
    with open(target, "wb") as f:
        f.write(serialized)
    timing_cache = config.get_timing_cache()
    if timing_cache is not None:
        cache_path.write_bytes(bytes(memoryview(timing_cache.serialize())))

    major, minor = torch.cuda.get_device_capability(0)
    info = {
        "network": network,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorrt_version": trt.__version__,
        "gpu": gpu,
        "compute_capability": f"{major}.{minor}",
        "precision": precision,
        "deployment_profile": profile.name,
        "fp32_pinned_layers": pinned,
        "optimization_profile": {
            n: {"min": s[0], "opt": s[1], "max": s[2]} for n, s in shapes.items()
        },
        "workspace_gib": workspace_gib,
        "build_seconds": round(seconds, 1),
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "model": metadata["model"]["name"],
    }
    with open(plan_metadata_path(engine_dir, network), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return target


def _pin_fp32_layers(trt, net, fp32_nodes: set) -> int:
    """Run the layers made from `fp32_nodes` in fp32; returns how many were pinned.

    Uses the weak-typing precision API (layer.precision, OBEY_PRECISION_CONSTRAINTS), deprecated
    since TensorRT 10.12 and removed in 11: hence the `tensorrt<11` pin of the extra.
    """
    floating = {trt.float32, trt.float16}
    if hasattr(trt, "bfloat16"):
        floating.add(trt.bfloat16)
    pinned = 0
    for i in range(net.num_layers):
        layer = net.get_layer(i)
        if not layer_matches_nodes(layer.name, fp32_nodes, getattr(layer, "metadata", "")):
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(o.dtype not in floating for o in outputs):
            continue  # shape arithmetic, indices, masks: no float precision to choose
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned
