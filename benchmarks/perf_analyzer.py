"""Drive the served models with perf_analyzer, using real image / frame bytes as input.

    python -m sam2_triton.benchmarks.perf_analyzer --url localhost:8001 --protocol grpc \
        --image photo.jpg --point 320,240 --concurrency 1:4 --csv perf.csv \
        [--repository build/model_repository] [--json perf.json] [--plot perf.png]

    python -m sam2_triton.benchmarks.perf_analyzer --model track_video --video frames_dir \
        --sequence-length 8 --point 320,240 --concurrency 2 --csv perf_video.csv

The first drives the `segment` ensemble. The second drives the `track_video` sequence model:
perf_analyzer sends sequences of `--sequence-length` requests (START on the first, END on the
last), each a real frame (JPEG / PNG files of `--video`, sorted by name, or a synthetic moving
shape), the first one also with a click on object 1; `--concurrency` sequences run at once.
`--concurrency` is one level (N) or a range START:END[:STEP] that perf_analyzer sweeps, one CSV
row per level. With --json or --plot it also writes the CSV's rows as JSON (latencies in ms)
and a plot of throughput and p50 / p99 latency against concurrency (benchmarks/report.py); the
CSV then defaults to the JSON's (else the plot's) path with .csv. --repository (the served
model repository) names the SAM 2 model and profile in that report.

Writes perf_analyzer's `--input-data` JSON (the encoded image as base64 BYTES, one click as
POINT_COORDS / POINT_LABELS) and runs the `perf_analyzer` binary that tritonclient[all] 2.51
installs. That binary needs libb64 (Debian package libb64-0d) and libcudart.so.12 (the
nvidia-cuda-runtime-cu12 wheel); this module puts the wheel's lib/ on LD_LIBRARY_PATH.
Without an image it generates a synthetic 640x480 PNG.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def synthetic_image(width: int = 640, height: int = 480) -> bytes:
    """A PNG with smooth gradients and a few solid shapes (something to segment)."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack(
        [(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), np.full_like(xx, 96)],
        axis=-1,
    ).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    draw.ellipse([width * 0.35, height * 0.3, width * 0.65, height * 0.7], fill=(230, 40, 40))
    draw.rectangle([width * 0.05, height * 0.1, width * 0.25, height * 0.45], fill=(30, 200, 60))
    draw.polygon(
        [(width * 0.7, height * 0.9), (width * 0.95, height * 0.9), (width * 0.82, height * 0.55)],
        fill=(40, 60, 220),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_input_data(path: Path, image: bytes, point: tuple[float, float]) -> Path:
    """perf_analyzer --input-data JSON for `segment`: one image, one foreground click."""
    data = {
        "data": [
            {
                "IMAGE": _bytes_tensor(image),
                "POINT_COORDS": {"content": [float(point[0]), float(point[1])], "shape": [1, 1, 2]},
                "POINT_LABELS": {"content": [1], "shape": [1, 1]},
            }
        ]
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _bytes_tensor(data: bytes) -> dict:
    # BYTES as base64 of the raw tensor payload: 4-byte little-endian length, then the bytes.
    return {
        "b64": base64.b64encode(len(data).to_bytes(4, "little") + data).decode("ascii"),
        "shape": [1],
    }


def synthetic_frames(count: int, width: int = 640, height: int = 480) -> list[bytes]:
    """PNG frames of a disc moving right over a gradient (something to track)."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack(
        [(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)), np.full_like(xx, 96)],
        axis=-1,
    ).astype(np.uint8)
    frames = []
    for t in range(count):
        image = Image.fromarray(background)
        cx, cy, r = width * 0.5 + 4 * t, height * 0.5, height * 0.15
        ImageDraw.Draw(image).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(230, 40, 40))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        frames.append(buffer.getvalue())
    return frames


def write_sequence_input_data(
    path: Path, frames: Sequence[bytes], point: tuple[float, float]
) -> Path:
    """perf_analyzer --input-data JSON for `track_video`: one stream, a frame per step, a click
    on object 1 with the first frame."""
    steps = [{"IMAGE": _bytes_tensor(frame)} for frame in frames]
    steps[0].update(
        {
            "POINT_OBJ_IDS": {"content": [1], "shape": [1]},
            "POINT_COORDS": {"content": [float(point[0]), float(point[1])], "shape": [1, 1, 2]},
            "POINT_LABELS": {"content": [1], "shape": [1, 1]},
        }
    )
    path.write_text(json.dumps({"data": [steps]}), encoding="utf-8")
    return path


def perf_analyzer_binary() -> str:
    found = shutil.which("perf_analyzer") or str(Path(sys.executable).parent / "perf_analyzer")
    if not Path(found).is_file():
        raise FileNotFoundError("perf_analyzer not found: pip install 'tritonclient[all]==2.51.0'")
    return found


def perf_analyzer_environment() -> dict:
    env = dict(os.environ)
    try:
        cuda_runtime = importlib.import_module("nvidia.cuda_runtime")  # (no type information)
        lib = Path(list(cuda_runtime.__path__)[0]) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p
        )
    except ImportError:
        pass  # a system CUDA runtime may be on the library path already
    return env


def run_perf_analyzer(command: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run one perf_analyzer command line (echoed first), its output captured."""
    print("+", " ".join(command), flush=True)
    return subprocess.run(
        command, env=perf_analyzer_environment(), capture_output=True, text=True, timeout=timeout_s
    )


def concurrency_range(concurrency: int | str) -> str:
    """perf_analyzer's --concurrency-range from one level (2, "2") or a range ("1:4", "1:8:2")."""
    parts = str(concurrency).split(":")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3 or min(values) < 1 or (len(values) > 1 and values[1] < values[0]):
        raise ValueError(f"concurrency {concurrency!r} is not N or START:END[:STEP] (N >= 1)")
    return ":".join(str(v) for v in (values * 2 if len(values) == 1 else values))


def perf_analyzer_command(
    url: str,
    protocol: str,
    input_data: Path,
    model: str = "segment",
    csv: Path | None = None,
    concurrency: int | str = 1,
    request_count: int = 10,
    extra: Sequence[str] = (),
) -> list[str]:
    command = [
        perf_analyzer_binary(),
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--input-data",
        str(input_data),
        "--concurrency-range",
        concurrency_range(concurrency),
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(request_count),
        "--max-trials",
        "3",
        "--stability-percentage",
        "100",
        "--percentile",
        "95",
    ]
    if csv is not None:
        command += ["-f", str(csv)]
    return command + list(extra)


def run(
    url: str,
    protocol: str = "grpc",
    image: bytes | None = None,
    point: tuple[float, float] = (320, 240),
    csv: Path | None = None,
    concurrency: int | str = 1,
    request_count: int = 10,
    timeout_s: float = 1800,
) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="sam2-perf-") as tmp:
        data = write_input_data(Path(tmp) / "input.json", image or synthetic_image(), point)
        command = perf_analyzer_command(
            url, protocol, data, csv=csv, concurrency=concurrency, request_count=request_count
        )
        return run_perf_analyzer(command, timeout_s)


def run_sequences(
    url: str,
    protocol: str = "grpc",
    frames: Sequence[bytes] | None = None,
    point: tuple[float, float] = (320, 240),
    sequence_length: int = 8,
    csv: Path | None = None,
    concurrency: int | str = 1,
    request_count: int = 16,
    timeout_s: float = 3600,
) -> subprocess.CompletedProcess:
    """perf_analyzer on `track_video`: sequences of `sequence_length` real frames."""
    frames = list(frames or synthetic_frames(sequence_length))
    if len(frames) < sequence_length:
        raise ValueError(f"{len(frames)} frames for sequences of {sequence_length}")
    with tempfile.TemporaryDirectory(prefix="sam2-perf-") as tmp:
        data = write_sequence_input_data(Path(tmp) / "input.json", frames[:sequence_length], point)
        command = perf_analyzer_command(
            url,
            protocol,
            data,
            model="track_video",
            csv=csv,
            concurrency=concurrency,
            request_count=request_count,
            extra=[
                "--sequence-length",
                str(sequence_length),
                "--sequence-length-variation",
                "0",
                "--sequence-id-range",
                "1:1000000",
            ],
        )
        return run_perf_analyzer(command, timeout_s)


def read_frames(folder: Path) -> list[bytes]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise FileNotFoundError(f"no .jpg / .jpeg / .png frames in {folder}")
    return [p.read_bytes() for p in paths]


def repository_marker(repository: Path | None) -> dict:
    """The served repository's marker (SAM 2 model, profile, checkpoint); {} without one."""
    from sam2_triton.serving.repository import MARKER_FILE

    if repository is None:
        return {}
    marker_file = repository / MARKER_FILE
    if not marker_file.is_file():
        raise FileNotFoundError(f"{marker_file} not found: --repository is not a repository")
    return json.loads(marker_file.read_text(encoding="utf-8"))


def report_record(served_model: str, input_description: str, protocol: str, marker: dict) -> dict:
    """The JSON record of a perf_analyzer run, made as it starts: header (SAM 2 model and
    weights from the repository marker) and what is driven; "rows" (one per concurrency level)
    are filled in from the CSV afterwards."""
    from sam2_triton.benchmarks.report import record_header

    return {
        **record_header(
            marker.get("model", "(model not given: --repository)"),
            _weights(marker.get("checkpoint")),
        ),
        "profile": marker.get("profile"),
        "served_model": served_model,
        "protocol": protocol,
        "input": input_description,
        "rows": [],
    }


def _weights(checkpoint: dict | None) -> str | None:
    # the repository marker's checkpoint entry: {"random_weights": true, ...} or {"file": ...}
    if not checkpoint:
        return None
    return "random" if checkpoint.get("random_weights") else str(checkpoint.get("file"))


def main(argv: list[str] | None = None) -> int:
    from sam2_triton.benchmarks.report import (
        add_output_arguments,
        plot_path,
        plot_perf_analyzer,
        read_perf_analyzer_csv,
        write_report,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="localhost:8001")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--model", choices=("segment", "track_video"), default="segment")
    parser.add_argument("--image", type=Path, help="image file (default: synthetic 640x480 PNG)")
    parser.add_argument(
        "--video", type=Path, help="track_video: folder of frames (default: synthetic)"
    )
    parser.add_argument(
        "--sequence-length", type=int, default=8, help="track_video: frames per sequence"
    )
    parser.add_argument("--point", default="320,240", help="click x,y in pixels")
    parser.add_argument("--concurrency", default="1", help="N, or START:END[:STEP] to sweep")
    parser.add_argument(
        "--request-count", type=int, default=10, help="requests per measurement window"
    )
    parser.add_argument("--csv", type=Path, help="write perf_analyzer's CSV report here")
    parser.add_argument(
        "--repository", type=Path, help="the served model repository (names model and profile)"
    )
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    x, y = (float(v) for v in args.point.split(","))
    concurrency_range(args.concurrency)  # refuse bad values before starting perf_analyzer
    marker = repository_marker(args.repository)
    png = plot_path(args.json, args.plot)
    csv_path = args.csv
    if csv_path is None and png is not None:
        csv_path = Path(args.json or png).with_suffix(".csv")
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)  # perf_analyzer does not create it
    if args.model == "track_video":
        source = str(args.video) if args.video else "synthetic 640x480 PNG frames"
        described = f"sequences of {args.sequence_length} frames ({source})"
    else:
        described = args.image.name if args.image else "synthetic 640x480 PNG"
    record = report_record(args.model, described, args.protocol, marker)
    if args.model == "track_video":
        frames = read_frames(args.video) if args.video else None
        result = run_sequences(
            args.url,
            args.protocol,
            frames,
            (x, y),
            args.sequence_length,
            csv_path,
            args.concurrency,
            args.request_count,
        )
    else:
        image = args.image.read_bytes() if args.image else None
        result = run(
            args.url, args.protocol, image, (x, y), csv_path, args.concurrency, args.request_count
        )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode == 0 and png is not None and csv_path is not None:
        record["rows"] = read_perf_analyzer_csv(csv_path)
        write_report(record, plot_perf_analyzer, args.json, png)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
