"""Latency of each exported network in ONNX Runtime against the same network in PyTorch.

Both run in this process, on the same inputs and the same machine (CPU unless the PyTorch side is
given --device cuda), call by call in turn so that a noisy machine slows both alike. The PyTorch
side is the official `sam2` modules in eager mode, wrapped as in `export/networks/` (the fidelity
tests show the two compute the same values); for memory attention, whose export rearranges the
arithmetic, it is the official `MemoryAttention` itself (benchmarks/memory_attention.py).
`--objects N` sizes the video-tracking calls for N objects batched (decoder prompts, memory
encoder and memory attention batch).

    python -m sam2_triton.benchmarks.networks --export-dir artifacts/tiny --model tiny \
        [--checkpoint F | --random-weights] [--repeat 10] [--objects 1] \
        [--json networks.json] [--plot networks.png]

Writes the p50 / p95 per network as JSON and a bar plot (benchmarks/report.py).

Weights do not change the speed; --random-weights is accepted for that reason.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np
import torch

from sam2_triton.benchmarks.report import (
    add_output_arguments,
    plot_networks,
    record_header,
    write_report,
)
from sam2_triton.configs import NETWORKS, get_model
from sam2_triton.export.checkpoints import build_sam2_model
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.networks import NETWORK_CLASSES
from sam2_triton.export.sample_inputs import random_inputs
from sam2_triton.python_backend.onnx_networks import OnnxNetworks

# One typical call per network: one image; one prompt of two clicks; one object; a full memory bank.
TYPICAL_SIZES: dict[str, dict[str, int]] = {
    "image_encoder": {"batch": 1},
    "mask_decoder": {"num_images": 1, "num_prompts": 1, "num_points": 2},
    "memory_encoder": {"batch": 1, "mask_height": 256, "mask_width": 256},
    "memory_attention": {"batch": 1, "num_memories": 7, "num_pointers": 16},
}


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeat: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, the functions called in turn `repeat` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--export-dir, --model and the weights (--checkpoint or --random-weights) of a benchmark."""
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--model", default="tiny")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint")
    weights.add_argument("--random-weights", action="store_true")


def weights_description(args: argparse.Namespace) -> str:
    """What a benchmark's reference side was built from: the checkpoint's path or "random"."""
    return "random" if args.random_weights else str(args.checkpoint)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Protocol and ports of the Triton server a serving benchmark starts."""
    parser.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--objects", type=int, default=1, help="objects batched per video frame")
    add_output_arguments(parser)
    args = parser.parse_args()
    from sam2_triton.benchmarks.memory_attention import official_call

    spec = get_model(args.model)
    model = build_sam2_model(spec, checkpoint=args.checkpoint, random_weights=args.random_weights)
    onnx_networks = OnnxNetworks(args.export_dir, networks=args.networks)
    rng = np.random.default_rng(0)
    results = {
        **record_header(spec.name, weights_description(args)),
        "objects": args.objects,
        "repeat": args.repeat,
        "networks": {},
    }
    print(f"{'network':18} {'ONNX Runtime p50/p95 ms':>24} {'PyTorch p50/p95 ms':>22}")
    for name in args.networks:
        sizes = dict(TYPICAL_SIZES[name])
        for axis in ("batch", "num_prompts"):
            if axis in sizes and name != "image_encoder":
                sizes[axis] = args.objects
        inputs = random_inputs(CONTRACTS[name], sizes, rng)
        if name == "memory_attention":
            for key in (
                "memory_temporal_positions",
                "object_pointer_positions",
            ):  # as SAM 2 batches
                inputs[key] = np.ascontiguousarray(
                    np.broadcast_to(inputs[key][:1], inputs[key].shape)
                )
            run_torch = official_call(model, inputs)
        else:
            net = NETWORK_CLASSES[name](model).eval()
            tensors = [torch.from_numpy(inputs[n]) for n in CONTRACTS[name].input_names]

            def run_torch(net=net, tensors=tensors):
                with torch.inference_mode():
                    net(*tensors)

        times = time_interleaved(
            {
                "onnxruntime": functools.partial(onnx_networks.run, name, **inputs),
                "pytorch": run_torch,
            },
            args.repeat,
        )
        ort_times, torch_times = summarize(times["onnxruntime"]), summarize(times["pytorch"])
        results["networks"][name] = {"onnxruntime": ort_times, "pytorch": torch_times}
        print(
            f"{name:18} {ort_times['p50_ms']:11.1f} / {ort_times['p95_ms']:8.1f}"
            f" {torch_times['p50_ms']:11.1f} / {torch_times['p95_ms']:8.1f}"
        )
    write_report(results, plot_networks, args.json, args.plot)


if __name__ == "__main__":
    main()
