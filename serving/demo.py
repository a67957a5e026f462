"""The main job's demo: repository -> real Triton server -> client -> overlays -> stop.

    python -m sam2_triton.serving.demo --export-dir artifacts/tiny --output demo

Builds the CPU-profile repository from the export, starts the Triton server carried by
nvidia-pytriton, and then, through the client command (`sam2-triton-client`):

* image: writes a sample image (synthetic: nothing is downloaded), segments it with a click
  and a box (`segment`), writes the overlay, mask PNGs and COCO RLE JSON into --output;
* video: writes a short sample video (an orange disc moving over a textured background) with
  PyAV, tracks the disc from a box on frame 0 (`track`, gRPC stream), writes
  --output/video/overlay.mp4 and one mask PNG per frame into --output/video/masks/;

and stops the server. `--video-frames 0` skips the video. When the export has random weights
(metadata.json says so), the overlays are named overlay_random_weights.png / .mp4 instead, so
that a look at the folder already tells their masks are meaningless.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from sam2_triton.benchmarks.perf_analyzer import synthetic_image
from sam2_triton.client.cli import OVERLAY_FILE, VIDEO_OVERLAY_FILE
from sam2_triton.client.cli import main as client_main
from sam2_triton.client.video_io import VideoWriter
from sam2_triton.configs import get_profile
from sam2_triton.errors import Sam2TritonError
from sam2_triton.export.metadata import load_metadata
from sam2_triton.serving.local_server import LocalTritonServer
from sam2_triton.serving.repository import build_repository

SAMPLE_SIZE = (640, 480)  # width, height of the generated sample image
VIDEO_SIZE = (320, 240)  # width, height of the generated sample video
# Each tracked frame costs about 8 s with the tiny model on a 2-core CPU (image encoder ~3 s,
# memory attention ~5 s), so 10 frames keep the video part near a minute and a half while the
# tracker still fills its memory bank (7 memories) and has to follow the disc over 60 pixels.
VIDEO_FRAMES = 10
VIDEO_FPS = 10
DISC_RADIUS = 28
DISC_STEP = (6, 2)  # pixels per frame (x, y)
VIDEO_DIR = "video"  # inside --output: the sample video, its overlay and masks
RANDOM_WEIGHTS_SUFFIX = "_random_weights"  # of overlay names when the export has random weights


def overlay_name(name: str, random_weights: bool) -> str:
    """The demo's name for the client's overlay file `name`: `overlay.png` stays as it is for
    real weights and becomes `overlay_random_weights.png` for random ones."""
    if not random_weights:
        return name
    path = Path(name)
    return f"{path.stem}{RANDOM_WEIGHTS_SUFFIX}{path.suffix}"


def export_has_random_weights(export_dir: Path) -> bool:
    """Whether the export in `export_dir` was made from random weights (its metadata.json)."""
    return bool(load_metadata(export_dir)["model"]["checkpoint"].get("random_weights", False))


def name_overlay(folder: Path, name: str, random_weights: bool) -> Path:
    """Give the overlay `folder/name` that the client wrote its demo name and delete the overlay
    of the other kind left by an earlier run (so that no stale picture sits beside it)."""
    written = folder / name
    target = folder / overlay_name(name, random_weights)
    stale = folder / overlay_name(name, not random_weights)
    if target != written:
        written.replace(target)
        print(f"{written} -> {target} (random weights: its masks are meaningless)", flush=True)
    stale.unlink(missing_ok=True)
    return target


def _disc_center(frame: int) -> tuple[float, float]:
    return 80.0 + DISC_STEP[0] * frame, 110.0 + DISC_STEP[1] * frame


def write_sample_video(
    path: Path,
    frames: int = VIDEO_FRAMES,
    size: tuple[int, int] = VIDEO_SIZE,
    fps: float = VIDEO_FPS,
) -> tuple[float, float, float, float]:
    """An H.264 MP4 of an orange disc moving right and down over a textured background (stripes,
    a grid of squares, soft noise); returns the disc's box (x0, y0, x1, y1) on frame 0."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(0).normal(0.0, 6.0, (height, width, 1))
    background = (
        np.stack(
            [
                90 + 40 * np.sin(xx / 7.0 + yy / 13.0),
                110 + 35 * np.cos(yy / 9.0),
                120 + 30 * (((xx // 24) + (yy // 24)) % 2),
            ],
            axis=-1,
        )
        + noise
    )
    with VideoWriter(path, fps) as writer:
        for t in range(frames):
            cx, cy = _disc_center(t)
            picture = background.copy()
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= DISC_RADIUS**2
            picture[disc] = (240, 140, 30)
            writer.write(picture.clip(0, 255).astype(np.uint8))
    cx, cy = _disc_center(0)
    return cx - DISC_RADIUS - 2, cy - DISC_RADIUS - 2, cx + DISC_RADIUS + 2, cy + DISC_RADIUS + 2


def segment_image(output: Path, grpc_port: int) -> int:
    """The image part: `sam2-triton-client segment` on a sample image into `output`."""
    image = output / "sample.png"
    image.write_bytes(synthetic_image(*SAMPLE_SIZE))
    width, height = SAMPLE_SIZE
    # The red ellipse of the sample image: a click on it and a box around it.
    return client_main(
        [
            "segment",
            str(image),
            "--point",
            f"{width * 0.5:.0f},{height * 0.5:.0f}",
            "--box",
            f"{width * 0.33:.0f},{height * 0.28:.0f},{width * 0.67:.0f},{height * 0.72:.0f}",
            "--protocol",
            "grpc",
            "--url",
            f"localhost:{grpc_port}",
            "--output",
            str(output),
        ]
    )


def track_video(output: Path, grpc_port: int, frames: int) -> int:
    """The video part: `sam2-triton-client track` on a sample video into `output`/video."""
    folder = output / VIDEO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "sample.mp4"
    box = write_sample_video(video, frames)
    print(
        f"tracking {frames} frames of {video} (about 8 s per frame on a 2-core CPU) ...", flush=True
    )
    return client_main(
        [
            "track",
            str(video),
            "--box",
            "0:1:" + ",".join(f"{v:.0f}" for v in box),
            "--num-frames-known",
            "--protocol",
            "grpc",
            "--url",
            f"localhost:{grpc_port}",
            "--output",
            str(folder),
        ]
    )


def run_demo(
    export_dir: Path,
    output: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    video_frames: int = VIDEO_FRAMES,
) -> int:
    output.mkdir(parents=True, exist_ok=True)
    random_weights = export_has_random_weights(export_dir)
    with tempfile.TemporaryDirectory(prefix="sam2-demo-") as tmp:
        repository = build_repository(
            export_dir, Path(tmp) / "model_repository", get_profile("cpu")
        )
        print(
            f"starting tritonserver on {repository} (HTTP {http_port}, gRPC {grpc_port}) ...",
            flush=True,
        )
        with LocalTritonServer(
            repository, http_port, grpc_port, metrics_port, log_file=output / "tritonserver.log"
        ):
            code = segment_image(output, grpc_port)
            if code == 0:
                name_overlay(output, OVERLAY_FILE, random_weights)
            if code == 0 and video_frames > 0:
                code = track_video(output, grpc_port, video_frames)
                if code == 0:
                    name_overlay(output / VIDEO_DIR, VIDEO_OVERLAY_FILE, random_weights)
            return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", default="artifacts/tiny")
    parser.add_argument("--output", default="demo")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--video-frames",
        type=int,
        default=VIDEO_FRAMES,
        help=f"frames of the sample video to track (default {VIDEO_FRAMES}; 0: none)",
    )
    args = parser.parse_args(argv)
    try:
        return run_demo(
            Path(args.export_dir),
            Path(args.output),
            args.http_port,
            args.grpc_port,
            args.metrics_port,
            args.video_frames,
        )
    except Sam2TritonError as exc:
        print(f"sam2-triton demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
