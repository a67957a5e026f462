"""Fidelity and served parity for every model size: one pytest run per size, one table.

For each size (configs/models.yaml) this runs, in one pytest session (one export, one server):

* graph fidelity and lint (tests/test_fidelity.py, tests/test_lint.py): every ONNX graph under
  ONNX Runtime against the official PyTorch modules, relative L2 error <= 1e-4;
* served image parity (tests/test_serving_parity.py): the interactive session, the one-shot
  `segment` ensemble and encode + decode through a real Triton server against
  `SAM2ImagePredictor`, mask IoU >= 0.99, on IMAGE_CASES (two of the four images CI runs: every
  image costs the same encoder run whatever its size, and these two reach every path);
* served video parity (test_served_tracking_matches_sam2_video_predictor in
  tests/test_video_serving.py): `track_video` through the server against `SAM2VideoPredictor`,
  2 objects, IoU >= 0.99, on --video-frames frames (default VIDEO_FRAMES; CI runs 8 with tiny).

The tests write their worst values (per measure below) into a JSON file named by the
environment variable `RESULTS_ENV` (tests/conftest.py, fixture `worst_values`); this script
collects them with each run's exit status and duration into one JSON record and a markdown
table. Weights are random (written by the tests): the comparison is between two implementations
of the same network, so it holds for any weights.

    python -m sam2_triton.benchmarks.all_sizes --json build/all_sizes/all_sizes.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sam2_triton.benchmarks.report import record_header
from sam2_triton.configs import get_model, model_names

# The file the tests write their worst values into (read by tests/conftest.py).
RESULTS_ENV = "SAM2_TRITON_WORST_VALUES"
# Frames of the served video parity test (read by tests/test_video_serving.py).
VIDEO_PARITY_FRAMES_ENV = "SAM2_TRITON_VIDEO_PARITY_FRAMES"
VIDEO_FRAMES = 4
# The served image parity cases run per size (test ids of tests/test_serving_parity.py).
IMAGE_CASES = ("480x640-PNG-http", "300x1000-JPEG-http")
# measure -> (which value is worst, column title); the tests record under these names.
MEASURES = {
    "graph_relative_error": ("max", "worst graph error (rel. L2, bound 1e-4)"),
    "image_iou": ("min", "worst image IoU (bound 0.99)"),
    "video_iou": ("min", "worst video IoU (bound 0.99)"),
}
# What runs per size (paths relative to the repository root).
TESTS = [
    "tests/test_fidelity.py",
    "tests/test_lint.py",
    "tests/test_serving_parity.py",
    "tests/test_video_serving.py::test_served_tracking_matches_sam2_video_predictor",
]
TEST_MODELS_ENV = "SAM2_TRITON_TEST_MODELS"  # tests/conftest.py: the size the fixtures export
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def worse(measure: str, old: float | None, new: float) -> float:
    """The worse of two values of `measure` (`old` None: nothing recorded yet)."""
    if old is None:
        return new
    return max(old, new) if MEASURES[measure][0] == "max" else min(old, new)


def pytest_counts(output: str) -> dict[str, int]:
    """{"passed": n, "failed": n, ...} from pytest's summary line."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if not lines:
        return {}
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", lines[-1])}


def pytest_command(video_frames: int) -> tuple[list[str], dict[str, str]]:
    """(pytest command line, environment additions) of one size's run."""
    image_cases = " or ".join(IMAGE_CASES)
    selection = f"not test_served_masks_equal_reference or {image_cases}"
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider"]
    return [*command, "-k", selection, *TESTS], {VIDEO_PARITY_FRAMES_ENV: str(video_frames)}


def run_size(name: str, work_dir: Path, video_frames: int) -> dict[str, Any]:
    """Run the tests for one size (output into <work_dir>/<name>.log as it comes); its row:
    worst values, test counts, exit status, seconds."""
    values_path = work_dir / f"{name}.worst.json"
    values_path.unlink(missing_ok=True)
    command, extra_env = pytest_command(video_frames)
    env = {**os.environ, **extra_env, TEST_MODELS_ENV: name, RESULTS_ENV: str(values_path)}
    log = work_dir / f"{name}.log"
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as output:
        completed = subprocess.run(
            command, cwd=REPOSITORY_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - start
    values = json.loads(values_path.read_text()) if values_path.exists() else {}
    return {
        "model": name,
        "checkpoint": get_model(name).checkpoint,
        **{measure: values.get(measure) for measure in MEASURES},
        "tests": pytest_counts(log.read_text(encoding="utf-8")),
        "exit_status": completed.returncode,
        "seconds": round(seconds, 1),
        "log": str(log),
    }


def markdown_table(record: dict[str, Any]) -> str:
    """The record's rows as a markdown table (one row per size)."""
    titles = ["size", *(title for _, title in MEASURES.values()), "tests", "minutes"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in record["rows"]:
        cells = [f"`{row['model']}`"]
        for measure in MEASURES:
            value = row[measure]
            if value is None:
                cells.append("not measured")
            elif measure == "graph_relative_error":
                cells.append(f"{value:.1e}")
            else:
                cells.append(f"{value:.5f}")
        counts = row["tests"]
        summary = ", ".join(f"{n} {word}" for word, n in counts.items()) or "no summary"
        cells.append(summary if row["exit_status"] == 0 else f"**{summary}**")
        cells.append(f"{row['seconds'] / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="all", help="comma-separated sizes (configs/models.yaml) or all"
    )
    parser.add_argument(
        "--video-frames", type=int, default=VIDEO_FRAMES, help="frames of the video parity test"
    )
    parser.add_argument("--json", type=Path, required=True, help="write the record here")
    parser.add_argument(
        "--markdown", type=Path, help="write the table here (default: the JSON's path, .md)"
    )
    args = parser.parse_args(argv)
    names = model_names() if args.models == "all" else args.models.split(",")
    work_dir = args.json.parent
    work_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        **record_header(",".join(names), weights="random (written by the tests)"),
        "command": pytest_command(args.video_frames)[0][1:],
        "video_frames": args.video_frames,
        "image_cases": list(IMAGE_CASES),
        "rows": [],
    }
    for name in names:
        row = run_size(name, work_dir, args.video_frames)
        record["rows"].append(row)
        print(json.dumps(row), flush=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")  # partial results survive
    markdown = args.markdown or args.json.with_suffix(".md")
    markdown.write_text(markdown_table(record))
    print(markdown_table(record))
    return 0 if all(row["exit_status"] == 0 for row in record["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
