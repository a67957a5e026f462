"""Served video tracking against the official SAM2VideoPredictor, in one run, same machine.

    python -m sam2_triton.benchmarks.video_tracking --export-dir artifacts/tiny --model tiny \
        [--checkpoint F | --random-weights] [--frames 10] [--size 640x480] [--protocol grpc] \
        [--json video_tracking.json] [--plot video_tracking.png]

Frames per second of tracking a video from its JPEG files, prompts on frame 0:
  - 1 object and 3 objects: the reference `init_state` (loads and resizes the frames) +
    `add_new_points_or_box` + `propagate_in_video` in this process, against one served
    sequence (`track_video`) fed the same JPEG bytes frame by frame through the client;
  - N sequences (`--sequences`, 1 object each, N different videos): the reference tracks them
    one after the other (one process, as a user of the offline predictor would), the served
    ones run concurrently from N clients, their frames sharing track_video's batches
    (docs/serving.md, frames of concurrent videos in one batch). FPS = all frames / wall time
    (aggregate); per-stream FPS = one stream's frames / wall time.
The server is the one carried by nvidia-pytriton on a CPU-profile repository built from the
export. Reference and served runs alternate (shared VMs drift); `--repeat` runs each case
that many times and reports the median. Weights do not change the speed (the test checkpoint's
objects are present, so every frame runs the full memory path). Writes the results as JSON
(one entry per case under "cases", with its objects per video and sequences) and a plot of FPS
against objects and against sequences (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sam2_triton.benchmarks.concurrency import concurrently
from sam2_triton.benchmarks.networks import (
    add_model_arguments,
    add_server_arguments,
    weights_description,
)
from sam2_triton.benchmarks.report import (
    add_output_arguments,
    plot_video_tracking,
    record_header,
    write_report,
)
from sam2_triton.client import Sam2Client
from sam2_triton.configs import get_model, get_profile
from sam2_triton.export.checkpoints import build_sam2_model
from sam2_triton.serving.local_server import LocalTritonServer
from sam2_triton.serving.repository import build_repository

JPEG_QUALITY = 95


def write_video(folder: Path, num_frames: int, width: int, height: int, seed: int) -> list[Path]:
    """JPEG frames of three shapes moving over a textured background; returns their paths."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack(
        [
            80 + 40 * np.sin(xx / (17.0 + seed)),
            90 + 40 * np.cos(yy / 23.0),
            np.full_like(xx, 110.0),
        ],
        axis=-1,
    )
    starts = rng.uniform(0.2, 0.6, size=(3, 2)) * (width, height)
    colours = ((230, 60, 40), (40, 200, 230), (240, 220, 60))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in range(num_frames):
        frame = background.copy()
        for k, ((x, y), colour) in enumerate(zip(starts, colours)):
            cx, cy = x + 4 * t * (k + 1), y + 3 * t
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 <= (height / 10) ** 2] = colour
        path = folder / f"{t:05d}.jpg"
        Image.fromarray(frame.clip(0, 255).astype(np.uint8)).save(path, quality=JPEG_QUALITY)
        paths.append(path)
    return paths


def object_clicks(
    num_objects: int, width: int, height: int, seed: int
) -> dict[int, tuple[float, float]]:
    """A click on each of the first `num_objects` shapes of `write_video`'s frame 0."""
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0.2, 0.6, size=(3, 2)) * (width, height)
    return {k + 1: (float(starts[k, 0]), float(starts[k, 1])) for k in range(num_objects)}


def reference_run(model, folder: Path, clicks: dict[int, tuple[float, float]]) -> int:
    """Track the video offline; returns the number of frames with masks."""
    with torch.inference_mode():
        state = model.init_state(str(folder))
        for obj_id, xy in clicks.items():
            model.add_new_points_or_box(state, 0, obj_id=obj_id, points=[xy], labels=[1])
        return sum(1 for _ in model.propagate_in_video(state))


def served_run(
    url: str, protocol: str, paths: Sequence[Path], clicks: dict[int, tuple[float, float]]
) -> int:
    """Track the video through the server, frame by frame from its JPEG bytes."""
    points = {obj_id: ([xy], [1]) for obj_id, xy in clicks.items()}
    with Sam2Client(url, protocol) as client, client.video_session(num_frames=len(paths)) as video:
        frames = (path.read_bytes() for path in paths)
        return sum(1 for _ in video.track_frames(frames, {0: {"points": points}}))


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    frames = fn()
    return time.perf_counter() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--frames", type=int, default=10, help="frames per video")
    parser.add_argument("--size", default="640x480", help="frame size WxH")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sequences", type=int, default=4, help="concurrent sequences")
    parser.add_argument("--cases", default="1,3,seq", help="comma list of 1, 3, seq")
    add_server_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]

    from sam2.sam2_video_predictor import SAM2VideoPredictor

    model = build_sam2_model(
        get_model(args.model), checkpoint=args.checkpoint, random_weights=args.random_weights
    )
    if not isinstance(model, SAM2VideoPredictor):
        raise SystemExit("the reference model is not a SAM2VideoPredictor")
    cases_measured: list[dict[str, object]] = []
    results: dict[str, object] = {
        **record_header(args.model, weights_description(args)),
        "frames": args.frames,
        "size": f"{width}x{height}",
        "protocol": args.protocol,
        "repeat": args.repeat,
        "cases": cases_measured,
    }
    with tempfile.TemporaryDirectory(prefix="sam2-video-bench-") as tmp:
        videos = [
            write_video(Path(tmp) / f"video{i}", args.frames, width, height, seed=i)
            for i in range(max(args.sequences, 1))
        ]
        repository = build_repository(args.export_dir, Path(tmp) / "repository", get_profile("cpu"))
        with LocalTritonServer(repository, args.http_port, args.grpc_port, args.metrics_port):
            url = f"localhost:{args.grpc_port if args.protocol == 'grpc' else args.http_port}"
            one_click = object_clicks(1, width, height, 0)
            served_run(url, args.protocol, videos[0][:2], one_click)  # warm-up (sessions, BLS)
            reference_run(model, videos[0][0].parent, one_click)
            for case in cases:
                if case in ("1", "3"):
                    objects, sequences = int(case), 1
                    key = f"{case}_object" + ("s" if objects > 1 else "")
                elif case == "seq":
                    objects, sequences = 1, args.sequences
                    key = f"{sequences}_sequences"
                else:
                    raise SystemExit(f"unknown case {case!r}")
                # Sequence i tracks video i, a click on each of its first `objects` shapes.
                plan = [(i, object_clicks(objects, width, height, i)) for i in range(sequences)]

                def reference(plan=plan) -> int:  # one after another, in this process
                    return sum(reference_run(model, videos[i][0].parent, c) for i, c in plan)

                def served(plan=plan) -> int:  # concurrently, one client each
                    calls = [
                        functools.partial(served_run, url, args.protocol, videos[i], c)
                        for i, c in plan
                    ]
                    return sum(concurrently(calls))

                runs: dict[str, list[float]] = {"reference": [], "served": []}
                for _ in range(args.repeat):
                    for side, fn in (("reference", reference), ("served", served)):
                        seconds, frames = timed(fn)
                        runs[side].append(frames / seconds)
                        print(
                            f"{key:14s} {side:9s} {frames} frames in {seconds:7.1f} s = "
                            f"{frames / seconds:.3f} FPS",
                            flush=True,
                        )
                fps = {side: statistics.median(values) for side, values in runs.items()}
                cases_measured.append(
                    {
                        "case": key,
                        "objects": objects,
                        "sequences": sequences,
                        "reference_fps": fps["reference"],
                        "served_fps": fps["served"],
                        "ratio": fps["served"] / fps["reference"],
                        "reference_per_stream_fps": fps["reference"] / sequences,
                        "served_per_stream_fps": fps["served"] / sequences,
                        "runs": runs,
                    }
                )
    print(f"\n{'':14s}{'reference FPS':>15s}{'served FPS':>12s}{'ratio':>8s}{'per stream':>12s}")
    for value in cases_measured:
        print(
            f"{value['case']:14s}{value['reference_fps']:15.3f}{value['served_fps']:12.3f}"
            f"{value['ratio']:8.2f}{value['served_per_stream_fps']:12.3f}"
        )
    write_report(results, plot_video_tracking, args.json, args.plot)


if __name__ == "__main__":
    main()
