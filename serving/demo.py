"""The main job's image demo: repository -> real Triton server -> client -> overlay -> stop.

    python -m sam2_triton.serving.demo --export-dir artifacts/tiny --output demo

Builds the CPU-profile repository from the export, starts the Triton server carried by
nvidia-pytriton, writes a sample image (synthetic: nothing is downloaded), segments it through
the client command (`sam2-triton-client segment`) with a click and a box, writes the overlay,
masks PNG and COCO RLE JSON into --output, and stops the server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from sam2_triton.benchmarks.perf_analyzer import synthetic_image
from sam2_triton.client.cli import main as client_main
from sam2_triton.configs import get_profile
from sam2_triton.errors import Sam2TritonError
from sam2_triton.serving.local_server import LocalTritonServer
from sam2_triton.serving.repository import build_repository

SAMPLE_SIZE = (640, 480)  # width, height of the generated sample image


def run_demo(export_dir: Path, output: Path, http_port: int, grpc_port: int, metrics_port: int) -> int:
    output.mkdir(parents=True, exist_ok=True)
    image = output / "sample.png"
    image.write_bytes(synthetic_image(*SAMPLE_SIZE))
    width, height = SAMPLE_SIZE
    with tempfile.TemporaryDirectory(prefix="sam2-demo-") as tmp:
        repository = build_repository(export_dir, Path(tmp) / "model_repository", get_profile("cpu"))
        print(f"starting tritonserver on {repository} (HTTP {http_port}, gRPC {grpc_port}) ...", flush=True)
        with LocalTritonServer(repository, http_port, grpc_port, metrics_port,
                               log_file=output / "tritonserver.log"):
            # The red ellipse of the sample image: a click on it and a box around it.
            return client_main([
                "segment", str(image),
                "--point", f"{width * 0.5:.0f},{height * 0.5:.0f}",
                "--box", f"{width * 0.33:.0f},{height * 0.28:.0f},{width * 0.67:.0f},{height * 0.72:.0f}",
                "--protocol", "grpc", "--url", f"localhost:{grpc_port}",
                "--output", str(output),
            ])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", default="artifacts/tiny")
    parser.add_argument("--output", default="demo")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args(argv)
    try:
        return run_demo(Path(args.export_dir), Path(args.output), args.http_port, args.grpc_port,
                        args.metrics_port)
    except Sam2TritonError as exc:
        print(f"sam2-triton demo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
