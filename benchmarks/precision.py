"""Reduced precision against fp32 in the PyTorch runtime: per-network error and tracked masks.

For each precision (bf16, fp16 autocast; configs/precision_bounds.py has their bounds):

* per network: the relative L2 error of every output of `TorchVideoNetworks` at that precision
  against `TorchVideoNetworks` in fp32 (equal to ONNX Runtime fp32 to 1e-5,
  tests/test_video_networks.py), on the contract's random inputs, several seeds;
* tracked masks: a synthetic video (objects moving over a textured background, all in view on
  every frame) tracked by `VideoTracker` with the networks at that precision and in fp32, from
  the same prompts on frame 0 (a click, a box, a click); mask IoU per object and frame against
  the fp32 run, its worst and mean per object, and the seconds per frame.

A precision whose kernels this device lacks is skipped with the error as its reason; fp16 on a
CPU is skipped unless --slow-cpu-fp16 is given (SLOW_ON_CPU: PyTorch's CPU fp16 matrix products
run a reference, non-vectorised GEMM; one pass over the four networks took more than ten
minutes on a 2-core VM). Weights are random (export.checkpoints.write_random_checkpoint, as the
tests write them) unless --checkpoint names a file.

    python -m sam2_triton.benchmarks.precision --model tiny --frames 30 --objects 2 \\
        --json build/benchmarks/precision.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam2_triton.benchmarks.report import record_header
from sam2_triton.configs import get_model
from sam2_triton.configs.precision_bounds import PRECISION_BOUNDS
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.sample_inputs import random_inputs

REDUCED_PRECISIONS = ("bf16", "fp16")
# Precisions that run, but too slowly to measure, on a CPU: why.
SLOW_ON_CPU = {
    "fp16": "CPU fp16 matrix products run PyTorch's reference (non-vectorised) GEMM: more than "
    "ten minutes for one pass over the four networks on a 2-core VM; measure on a GPU "
    "(--device cuda) or pass --slow-cpu-fp16"
}
# Sizes of each network's dynamic axes in the per-network comparison (small: the CPU runs each
# network once per seed and precision).
NETWORK_SIZES = {
    "image_encoder": {"batch": 1},
    "mask_decoder": {"num_images": 1, "num_prompts": 2, "num_points": 3},
    "memory_encoder": {"batch": 2, "mask_height": 256, "mask_width": 256},
    "memory_attention": {"batch": 1, "num_memories": 2, "num_pointers": 3},
}
VIDEO_SIZE = (240, 320)  # H, W of the synthetic video
MAX_OBJECTS = 3


def relative_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """||actual - reference|| / ||reference|| (L2 over all elements, float64)."""
    reference64 = reference.double()
    diff = actual.double() - reference64
    return float(diff.norm() / reference64.norm().clamp_min(1e-30))


def network_errors(
    reference: Any, networks: Any, seeds: Sequence[int] = (0, 1)
) -> dict[str, dict[str, float]]:
    """{network: {output: worst relative error over `seeds`}} of `networks` against
    `reference` (both VideoNetworks on the CPU) on the contract's random inputs."""
    errors: dict[str, dict[str, float]] = {}
    for network, sizes in NETWORK_SIZES.items():
        worst: dict[str, float] = {}
        for seed in seeds:
            arrays = random_inputs(CONTRACTS[network], sizes, np.random.default_rng(seed))
            inputs = {name: torch.from_numpy(array) for name, array in arrays.items()}
            expected = reference.run(network, inputs)
            outputs = networks.run(network, inputs)
            for name, tensor in expected.items():
                error = relative_error(outputs[name].cpu(), tensor.cpu())
                worst[name] = max(worst.get(name, 0.0), error)
        errors[network] = worst
    return errors


def moving_objects_video(num_frames: int, size: tuple[int, int] = VIDEO_SIZE) -> list[np.ndarray]:
    """RGB uint8 [H, W, 3] frames: a disc circling, a square moving down and back and an
    ellipse moving right over a smooth textured background; all three stay in view and apart on
    every frame (positions: `object_positions`)."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(num_frames):
        image = np.empty((height, width, 3), np.float32)
        image[..., 0] = 60 + 30 * np.sin(xx / 9.0)
        image[..., 1] = 70 + 30 * np.cos(yy / 11.0)
        image[..., 2] = 90 + 20 * np.sin((xx + yy) / 17.0)
        (dx, dy), (sx, sy), (ex, ey) = object_positions(t, size)
        image[(xx - dx) ** 2 + (yy - dy) ** 2 <= 28**2] = (230, 60, 40)
        image[(xx >= sx) & (xx < sx + 50) & (yy >= sy) & (yy < sy + 50)] = (40, 200, 230)
        image[((xx - ex) / 36.0) ** 2 + ((yy - ey) / 20.0) ** 2 <= 1] = (240, 220, 60)
        frames.append(image.clip(0, 255).astype(np.uint8))
    return frames


def object_positions(t: int, size: tuple[int, int] = VIDEO_SIZE) -> list[tuple[float, float]]:
    """Frame t: (disc centre), (square's top-left corner), (ellipse centre), in pixels (x, y)."""
    height, width = size
    phase = 2 * np.pi * t / 30
    disc = (
        0.3 * width + 0.12 * width * np.cos(phase),
        0.37 * height + 0.12 * height * np.sin(phase),
    )
    square = (0.69 * width, 0.12 * height + 0.25 * height * (1 - np.cos(phase)) / 2)
    ellipse = (0.25 * width + (0.5 * width) * ((t % 60) / 59), 0.8 * height)
    return [disc, square, ellipse]


def frame0_prompts(num_objects: int, size: tuple[int, int] = VIDEO_SIZE) -> dict[int, dict]:
    """{obj_id: VideoTracker.add_prompt keyword arguments} on frame 0: a click on the disc, a
    box around the square, a click on the ellipse (the first `num_objects` of these)."""
    (dx, dy), (sx, sy), (ex, ey) = object_positions(0, size)
    prompts: dict[int, dict[str, Any]] = {
        1: dict(points=[[dx, dy]], labels=[1]),
        2: dict(box=[sx - 4, sy - 4, sx + 54, sy + 54]),
        3: dict(points=[[ex, ey]], labels=[1]),
    }
    if not 1 <= num_objects <= MAX_OBJECTS:
        raise ValueError(f"1 to {MAX_OBJECTS} objects, not {num_objects}")
    return {obj_id: prompts[obj_id] for obj_id in range(1, num_objects + 1)}


def track_masks(
    networks: Any, metadata: dict, frames: list[np.ndarray], num_objects: int
) -> tuple[np.ndarray, float]:
    """(masks bool [T, N, H, W], seconds per frame) of VideoTracker over `networks`."""
    from sam2_triton.python_backend.video.tracker import VideoTracker

    tracker = VideoTracker(networks, metadata, num_frames=len(frames))
    height, width = frames[0].shape[:2]
    for obj_id, prompt in frame0_prompts(num_objects, (height, width)).items():
        tracker.add_prompt(0, obj_id, **prompt)
    start = time.perf_counter()
    masks = [np.array(tracker.track(t, frame).masks) for t, frame in enumerate(frames)]
    return np.stack(masks), (time.perf_counter() - start) / len(frames)


def mask_ious(reference: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """IoU [T, N] of bool masks [T, N, H, W] against `reference` (1 where both are empty)."""
    inter = np.logical_and(reference, masks).sum(axis=(2, 3))
    union = np.logical_or(reference, masks).sum(axis=(2, 3))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def model_metadata(spec: Any, checkpoint: Path) -> dict:
    """What the tracker reads of metadata.json, built from the official model of `checkpoint`."""
    from sam2_triton.export.checkpoints import build_sam2_model
    from sam2_triton.export.onnx_export import OPSET, build_metadata

    model = build_sam2_model(spec, checkpoint=checkpoint)
    return build_metadata(model, spec, {"file": checkpoint.name}, {}, OPSET)


def skip_reason(precision: str, device: torch.device, slow_cpu_fp16: bool = False) -> str | None:
    """Why `precision` is not measured on `device` (None: it is)."""
    if device.type == "cpu" and precision in SLOW_ON_CPU and not slow_cpu_fp16:
        return SLOW_ON_CPU[precision]
    return None


def measure(
    checkpoint: Path,
    model: str,
    precisions: Sequence[str],
    num_frames: int,
    num_objects: int,
    device: str = "cpu",
    seeds: Sequence[int] = (0, 1),
    slow_cpu_fp16: bool = False,
) -> dict[str, Any]:
    """The record's results: the fp32 run and, per precision, its errors and IoUs or the
    reason it was skipped (each printed as it is measured)."""
    from sam2_triton.python_backend.video.networks import TorchVideoNetworks

    spec = get_model(model)
    metadata = model_metadata(spec, checkpoint)
    frames = moving_objects_video(num_frames)
    fp32 = TorchVideoNetworks(checkpoint, spec.name, device, "fp32")
    reference_masks, fp32_s = track_masks(fp32, metadata, frames, num_objects)
    results: dict[str, Any] = {
        "fp32": {
            "seconds_per_frame": round(fp32_s, 3),
            "mask_fraction_min": float(reference_masks.mean(axis=(2, 3)).min()),
            "mask_fraction_max": float(reference_masks.mean(axis=(2, 3)).max()),
        }
    }
    print(summary({"results": results}), flush=True)
    for precision in precisions:
        reason = skip_reason(precision, fp32.device, slow_cpu_fp16)
        if reason is not None:
            results[precision] = {"skipped": reason}
            continue
        networks = TorchVideoNetworks(checkpoint, spec.name, device, precision)
        try:
            errors = network_errors(fp32, networks, seeds)
        except (RuntimeError, NotImplementedError) as exc:  # no kernel for this dtype here
            results[precision] = {"skipped": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            continue
        masks, seconds = track_masks(networks, metadata, frames, num_objects)
        ious = mask_ious(reference_masks, masks)
        bound = PRECISION_BOUNDS[precision]
        worst_error = max(max(outputs.values()) for outputs in errors.values())
        results[precision] = {
            "network_errors": errors,
            "worst_network_error": worst_error,
            "iou_per_frame": ious.round(6).tolist(),
            "iou_worst_per_object": ious.min(axis=0).round(6).tolist(),
            "iou_mean_per_object": ious.mean(axis=0).round(6).tolist(),
            "iou_worst": float(ious.min()),
            "seconds_per_frame": round(seconds, 3),
            "bound": {
                "max_relative_error": bound.max_relative_error,
                "min_mask_iou": bound.min_mask_iou,
            },
            "within_bound": bool(
                worst_error <= bound.max_relative_error
                and (bound.min_mask_iou is None or ious.min() >= bound.min_mask_iou)
            ),
        }
        print(summary({"results": {precision: results[precision]}}), flush=True)
    return results


def summary(record: dict[str, Any]) -> str:
    """One line per precision: worst network error, worst / mean IoU per object, speed."""
    lines = []
    for precision, result in record["results"].items():
        if "skipped" in result:
            lines.append(f"{precision}: skipped ({result['skipped']})")
        elif precision == "fp32":
            lines.append(f"fp32: {result['seconds_per_frame']:.2f} s/frame (the reference)")
        else:
            per_network = ", ".join(
                f"{net} {max(outs.values()):.1e}" for net, outs in result["network_errors"].items()
            )
            lines.append(
                f"{precision}: network error {per_network}; IoU worst per object "
                f"{result['iou_worst_per_object']}, mean {result['iou_mean_per_object']}; "
                f"{result['seconds_per_frame']:.2f} s/frame; within bound: {result['within_bound']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--checkpoint", type=Path, help="weights (default: random weights)")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--objects", type=int, default=MAX_OBJECTS, choices=range(1, 4))
    parser.add_argument("--precisions", default=",".join(REDUCED_PRECISIONS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument(
        "--slow-cpu-fp16", action="store_true", help="measure fp16 on a CPU too (SLOW_ON_CPU)"
    )
    parser.add_argument("--json", type=Path, help="write the record here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a bound is exceeded")
    args = parser.parse_args(argv)
    spec = get_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            from sam2_triton.export.checkpoints import write_random_checkpoint

            checkpoint = write_random_checkpoint(spec, Path(tmp) / spec.checkpoint)
        record = {
            **record_header(
                spec.name, weights=str(args.checkpoint) if args.checkpoint else "random"
            ),
            "device": args.device,
            "torch": torch.__version__,
            "frames": args.frames,
            "objects": args.objects,
            "video_size": list(VIDEO_SIZE),
            "results": measure(
                checkpoint,
                spec.name,
                args.precisions.split(","),
                args.frames,
                args.objects,
                device=args.device,
                slow_cpu_fp16=args.slow_cpu_fp16,
            ),
        }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if args.check and not all(
        result.get("within_bound", True) for result in record["results"].values()
    ):
        sys.exit(1)
    return record


if __name__ == "__main__":
    main()
