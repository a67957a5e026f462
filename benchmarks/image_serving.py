"""Served image segmentation against the official SAM2ImagePredictor, in one run, same machine.

    python -m sam2_triton.benchmarks.image_serving --export-dir artifacts/tiny --model tiny \
        [--checkpoint F | --random-weights] [--image photo.jpg] [--repeat 10] [--protocol grpc] \
        [--json image_serving.json] [--plot image_serving.png]

Measures latency p50 / p95 (milliseconds) of
  - one-shot segmentation: reference `set_image` + `predict` (one click) in this process,
    against the served `segment` ensemble given the encoded image bytes;
  - one further click on an image already encoded: reference `predict`, against
    `segment_interactive` with the cached IMAGE_ID.
The server is the one carried by nvidia-pytriton, started here on a CPU-profile repository
built from the export (warm-up requests are not timed). Reference and served calls alternate.
Weights do not change the speed. Writes the results as JSON and a bar plot (p50 bars, p95
whiskers) of the four latencies (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sam2_triton.benchmarks.networks import (
    add_model_arguments,
    add_server_arguments,
    summarize,
    weights_description,
)
from sam2_triton.benchmarks.perf_analyzer import synthetic_image
from sam2_triton.benchmarks.report import (
    add_output_arguments,
    plot_image_serving,
    record_header,
    write_report,
)
from sam2_triton.client import Sam2Client
from sam2_triton.configs import get_model, get_profile
from sam2_triton.export.checkpoints import build_sam2_model
from sam2_triton.serving.local_server import LocalTritonServer
from sam2_triton.serving.repository import build_repository


def interleaved(
    reference: Callable[[], object], served: Callable[[], object], repeat: int, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Milliseconds of `repeat` calls of each, alternating reference and served."""
    for _ in range(warmup):
        reference()
        served()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, out in ((reference, times[0]), (served, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--image", type=Path, help="image file (default: synthetic 1280x720 PNG)")
    parser.add_argument("--repeat", type=int, default=10)
    add_server_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()

    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image_bytes = args.image.read_bytes() if args.image else synthetic_image(1280, 720)
    pixels = np.array(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
    height, width = pixels.shape[:2]
    click_coords = np.array([[width * 0.5, height * 0.5]], np.float32)  # one click, pixels
    click_labels = np.array([1], np.int32)

    model = build_sam2_model(
        get_model(args.model), checkpoint=args.checkpoint, random_weights=args.random_weights
    )
    reference = SAM2ImagePredictor(model)
    click_repeat = args.repeat * 3  # clicks are cheap: more samples
    results = {
        **record_header(args.model, weights_description(args)),
        "image": f"{width}x{height}",
        "protocol": args.protocol,
        "repeat": args.repeat,
        "click_repeat": click_repeat,
    }

    def reference_one_shot():
        with torch.inference_mode():
            reference.set_image(pixels)
            reference.predict(click_coords, click_labels)

    with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
        repository = build_repository(args.export_dir, Path(tmp) / "repository", get_profile("cpu"))
        with LocalTritonServer(repository, args.http_port, args.grpc_port, args.metrics_port):
            url = f"localhost:{args.grpc_port if args.protocol == 'grpc' else args.http_port}"
            client = Sam2Client(url, args.protocol)
            # Reference and served calls alternate, so that a machine whose speed drifts
            # (shared VMs) slows both sides alike.
            one_shot = interleaved(
                reference_one_shot,
                lambda: client.segment(image_bytes, click_coords, click_labels),
                args.repeat,
            )
            with client.session(image_bytes) as session:
                reference_one_shot()  # the reference predictor holds the same image
                click_times = interleaved(
                    lambda: reference.predict(click_coords, click_labels),
                    lambda: session.predict(click_coords, click_labels),
                    click_repeat,
                )
    results["reference_one_shot"], results["served_one_shot"] = map(summarize, one_shot)
    results["reference_click"], results["served_click"] = map(summarize, click_times)

    results["one_shot_ratio_p50"] = (
        results["served_one_shot"]["p50_ms"] / results["reference_one_shot"]["p50_ms"]
    )
    results["click_ratio_p50"] = (
        results["served_click"]["p50_ms"] / results["reference_click"]["p50_ms"]
    )
    print(f"{'':22s}{'p50 ms':>10s}{'p95 ms':>10s}")
    for key in ("reference_one_shot", "served_one_shot", "reference_click", "served_click"):
        print(f"{key:22s}{results[key]['p50_ms']:10.1f}{results[key]['p95_ms']:10.1f}")
    print(
        f"served / reference p50: one-shot {results['one_shot_ratio_p50']:.3f}, "
        f"click {results['click_ratio_p50']:.3f}"
    )
    write_report(results, plot_image_serving, args.json, args.plot)


if __name__ == "__main__":
    main()
