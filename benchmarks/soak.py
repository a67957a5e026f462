"""A bounded soak test: concurrent image requests and video sequences, good and bad, for a set
time against one server on loopback; errors by kind, latency percentiles, server memory.

    python -m sam2_triton.benchmarks.soak --export-dir artifacts/tiny --duration-s 1200 \
        [--image-workers 2] [--video-workers 2] [--seed 0] [--json soak.json] [--plot soak.png]

Without `--http-url` it builds the CPU repository of the export and starts its own server on
the given loopback ports; with `--http-url` / `--grpc-url` / `--server-pid` it soaks a running
one (the tests do). Each worker loops until the duration (or `--max-requests` in all) is spent:
image workers send `segment` and `segment_interactive` calls and refused ones (no prompt, a box
outside the image, broken image bytes, an unknown IMAGE_ID); video workers run short sequences
over HTTP or gRPC (START, frames, END) with refused frames in between (a frame of another size,
a frame index that goes back), which must leave the sequence working. An outcome is
"ok", "refused" (INVALID_ARG, as expected for a bad request) or "unexpected" (anything else);
memory is the resident size of tritonserver and every process under it, sampled every
`--sample-s` seconds. Exit status 1 when anything unexpected happened (`--check`).
"""

from __future__ import annotations

import argparse
import io
import random
import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sam2_triton.benchmarks.networks import add_server_arguments
from sam2_triton.benchmarks.report import (
    add_output_arguments,
    plot_soak,
    record_header,
    write_report,
)
from sam2_triton.client import Sam2Client, Sam2ClientError
from sam2_triton.serving.supervisor import python_stubs

# Status strings of a refused request (Triton's INVALID_ARG) over HTTP and gRPC.
REFUSED_STATUSES = ("400", "StatusCode.INVALID_ARGUMENT")
# How the client says that no server answered (client/transport.py).
TRANSPORT_FAILURES = ("is not reachable", "no answer from the server")
VIDEO_SIZES = ((160, 120), (128, 96))  # (width, height) of the sequences' frames
IMAGE_SIZES = ((320, 240), (200, 300), (480, 360))
FRAMES_PER_SEQUENCE = (3, 5)  # inclusive range
BAD_REQUEST_SHARE = 0.3
MAX_UNEXPECTED_KEPT = 20
MIB = 2**20


# -- server memory ------------------------------------------------------------------------------


def resident_bytes(pid: int) -> int:
    """VmRSS of one process in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def server_memory(pid: int) -> dict[str, int]:
    """Resident bytes of tritonserver (`pid`) and of each model's Python-backend stubs."""
    memory: Counter[str] = Counter({"tritonserver": resident_bytes(pid)})
    for stub in python_stubs(pid).values():
        memory[stub.model] += resident_bytes(stub.pid)
    return dict(memory)


# -- the load -------------------------------------------------------------------------------------


@dataclass
class SoakLog:
    """Outcomes and latencies of every call, shared by the workers (thread-safe)."""

    deadline: float
    max_requests: int
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spent(self) -> bool:
        with self.lock:
            return time.monotonic() >= self.deadline or (
                sum(self.outcomes.values()) >= self.max_requests
            )

    def call(
        self, action: str, bad: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Run one request `fn(*args, **kwargs)`; file its outcome. A bad request must be
        refused, a good one must succeed; anything else is unexpected. Returns the answer of a
        good request, else None."""
        start = time.perf_counter()
        result, outcome, message = None, "ok", ""
        try:
            result = fn(*args, **kwargs)
        except Sam2ClientError as error:
            outcome = "refused" if bad and is_refusal(error) else "unexpected"
            message = f"{action}: {error} (status {error.status})"
        except Exception as error:  # the soak reports every failure instead of stopping
            outcome, message = "unexpected", f"{action}: {type(error).__name__}: {error}"
        else:
            if bad:
                outcome, message = "unexpected", f"{action}: a bad request was answered"
        elapsed_ms = 1000 * (time.perf_counter() - start)
        with self.lock:
            self.outcomes[(action, outcome)] += 1
            self.latencies_ms[action].append(elapsed_ms)
            if outcome == "unexpected" and len(self.unexpected) < MAX_UNEXPECTED_KEPT:
                self.unexpected.append(message)
        return result if outcome == "ok" else None


def is_refusal(error: Sam2ClientError) -> bool:
    """Whether the server refused the request as invalid (INVALID_ARG). Over HTTP and unary gRPC
    the status says so; on a gRPC stream Triton sends a per-request error without a status, so
    there a server-side message counts unless the model says it failed inside ("internal error")
    or the client found no server."""
    if error.status is not None:
        return error.status in REFUSED_STATUSES
    message = str(error)
    return error.model is not None and not any(
        phrase in message for phrase in ("internal error", *TRANSPORT_FAILURES)
    )


def png_bytes(width: int, height: int, rng: random.Random) -> bytes:
    """A small PNG: a bright disc on a dark textured background."""
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    pixels = np.stack([(xx * 7 + yy * 3) % 64, (xx * 3) % 64, (yy * 5) % 64], axis=-1)
    pixels[(xx - cx) ** 2 + (yy - cy) ** 2 <= (min(width, height) / 5) ** 2] = (230, 200, 60)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_worker(url: str, protocol: str, log: SoakLog, seed: int) -> None:
    """Good and bad `segment` / `segment_interactive` requests until the log is spent."""
    rng = random.Random(seed)
    with Sam2Client(url, protocol=protocol) as client:
        while not log.spent():
            width, height = rng.choice(IMAGE_SIZES)
            image = png_bytes(width, height, rng)
            click = np.array([[width / 2, height / 2]], np.float32)
            if rng.random() >= BAD_REQUEST_SHARE:
                if rng.random() < 0.5:
                    log.call("segment", False, client.segment, image, click, [1])
                    continue
                session = log.call("session", False, client.session, image)
                if session is not None:
                    with session:
                        for _ in range(2):
                            log.call("click", False, session.predict, click, [1])
                continue
            kind = rng.choice(("no_prompt", "box_outside", "broken_image", "unknown_id"))
            if kind == "no_prompt":
                log.call("bad:no_prompt", True, client.segment, image)
            elif kind == "box_outside":
                box = [0, 0, 50 * width, 50 * height]
                log.call("bad:box_outside", True, client.segment, image, box=box)
            elif kind == "broken_image":
                log.call("bad:broken_image", True, client.segment, image[:40], click, [1])
            else:
                stranger = _unknown_session(client, (height, width))
                log.call("bad:unknown_id", True, stranger.predict, click, [1])


def _unknown_session(client: Sam2Client, size: tuple[int, int]) -> Any:
    """An interactive session whose image id the server never issued."""
    from sam2_triton.client.client import InteractiveSession

    return InteractiveSession(client, secrets.token_hex(16).encode(), size)


def video_worker(url: str, protocol: str, log: SoakLog, seed: int) -> None:
    """Short sequences (START, frames, END) with refused frames in between."""
    rng = random.Random(seed)
    with Sam2Client(url, protocol=protocol) as client:
        while not log.spent():
            width, height = rng.choice(VIDEO_SIZES)
            frames = rng.randint(*FRAMES_PER_SEQUENCE)
            samurai = rng.random() < 0.3
            video = client.video_session(num_frames=frames, samurai=samurai)
            try:
                box = {1: [width * 0.3, height * 0.3, width * 0.7, height * 0.7]}
                for index in range(frames):
                    if log.spent():
                        break
                    frame = png_bytes(width, height, rng)
                    prompts = {"boxes": box} if index == 0 else {}
                    answer = log.call("frame", False, video.track, frame, **prompts)
                    if answer is None and index == 0:
                        break  # START failed (already filed): nothing to go on with
                    if index > 0 and rng.random() < BAD_REQUEST_SHARE:
                        other = png_bytes(height, width + 8, rng)  # another frame size
                        if rng.random() < 0.5:
                            log.call("bad:frame_size", True, video.track, other)
                        else:
                            back = video.last_frame or 0
                            log.call("bad:frame_order", True, video.track, frame, frame_index=back)
            finally:
                log.call("end", False, video.end)


def sample_memory(pid: int, log: SoakLog, every_s: float, samples: list[dict[str, Any]]) -> None:
    """Append {t_s, total_mib, by_process} every `every_s` seconds until the soak ends."""
    start = time.monotonic()
    while True:
        memory = server_memory(pid)
        samples.append(
            {
                "t_s": round(time.monotonic() - start, 1),
                "total_mib": round(sum(memory.values()) / MIB, 1),
                "by_process_mib": {k: round(v / MIB, 1) for k, v in sorted(memory.items())},
            }
        )
        if log.spent():
            return
        time.sleep(every_s)


def memory_growth(samples: list[dict[str, Any]]) -> float:
    """MiB per minute of the total over the second half of the run (least squares)."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    t = np.array([s["t_s"] for s in half]) / 60.0
    total = np.array([s["total_mib"] for s in half])
    if np.ptp(t) == 0:
        return 0.0
    return float(np.polyfit(t, total, 1)[0])


def run_soak(
    http_url: str,
    grpc_url: str,
    server_pid: int,
    duration_s: float,
    image_workers: int = 2,
    video_workers: int = 2,
    max_requests: int = 100_000,
    sample_s: float = 5.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Soak a running server; returns the record (see the module docstring)."""
    log = SoakLog(deadline=time.monotonic() + duration_s, max_requests=max_requests)
    samples: list[dict[str, Any]] = []
    workers = [
        threading.Thread(
            target=image_worker,
            args=(grpc_url if i % 2 else http_url, "grpc" if i % 2 else "http", log, seed + i),
            name=f"image-{i}",
        )
        for i in range(image_workers)
    ] + [
        threading.Thread(
            target=video_worker,
            args=(grpc_url if i % 2 == 0 else http_url, "grpc" if i % 2 == 0 else "http", log),
            kwargs={"seed": seed + 100 + i},
            name=f"video-{i}",
        )
        for i in range(video_workers)
    ]
    sampler = threading.Thread(target=sample_memory, args=(server_pid, log, sample_s, samples))
    started = time.monotonic()
    sampler.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    sampler.join()
    elapsed = time.monotonic() - started
    by_kind: dict[str, dict[str, int]] = defaultdict(dict)
    for (action, outcome), count in sorted(log.outcomes.items()):
        by_kind[action][outcome] = count
    latency = {
        action: {
            "count": len(values),
            "p50_ms": float(np.percentile(values, 50)),
            "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": statistics.fmean(values),
        }
        for action, values in sorted(log.latencies_ms.items())
    }
    totals = [s["total_mib"] for s in samples]
    return {
        "duration_s": round(elapsed, 1),
        "image_workers": image_workers,
        "video_workers": video_workers,
        "requests": sum(log.outcomes.values()),
        "outcomes": dict(by_kind),
        "unexpected": sum(c for (_, o), c in log.outcomes.items() if o == "unexpected"),
        "unexpected_messages": log.unexpected,
        "latency": latency,
        "memory": {
            "samples": samples,
            "start_mib": totals[0] if totals else 0.0,
            "end_mib": totals[-1] if totals else 0.0,
            "max_mib": max(totals, default=0.0),
            "growth_mib_per_min_second_half": memory_growth(samples),
        },
    }


def print_summary(record: dict[str, Any]) -> None:
    print(f"{record['requests']} requests in {record['duration_s']} s")
    for action, outcomes in record["outcomes"].items():
        lat = record["latency"][action]
        print(
            f"  {action:18s} {outcomes}  p50 {lat['p50_ms']:8.0f} ms  p90 {lat['p90_ms']:8.0f} ms"
            f"  p99 {lat['p99_ms']:8.0f} ms"
        )
    memory = record["memory"]
    print(
        f"server memory: start {memory['start_mib']:.0f} MiB, end {memory['end_mib']:.0f} MiB, "
        f"max {memory['max_mib']:.0f} MiB, second half "
        f"{memory['growth_mib_per_min_second_half']:+.1f} MiB/min"
    )
    for message in record["unexpected_messages"]:
        print(f"  UNEXPECTED {message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", help="export to serve (without --http-url)")
    parser.add_argument("--http-url", help="soak this running server (loopback) instead")
    parser.add_argument("--grpc-url", help="its gRPC address (with --http-url)")
    parser.add_argument("--server-pid", type=int, help="its tritonserver pid (with --http-url)")
    parser.add_argument("--duration-s", type=float, default=1200.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--image-workers", type=int, default=2)
    parser.add_argument("--video-workers", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=5.0, help="memory sampling period")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="tiny", help="named in the report")
    parser.add_argument("--check", action="store_true", help="exit 1 on anything unexpected")
    add_server_arguments(parser)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    soak = dict(
        duration_s=args.duration_s,
        image_workers=args.image_workers,
        video_workers=args.video_workers,
        max_requests=args.max_requests,
        sample_s=args.sample_s,
        seed=args.seed,
    )
    if args.http_url:
        if not (args.grpc_url and args.server_pid):
            parser.error("--http-url needs --grpc-url and --server-pid")
        record = run_soak(args.http_url, args.grpc_url, args.server_pid, **soak)
    else:
        if not args.export_dir:
            parser.error("give --export-dir (or --http-url of a running server)")
        from sam2_triton.configs import get_profile
        from sam2_triton.serving.local_server import LocalTritonServer
        from sam2_triton.serving.repository import build_repository

        with tempfile.TemporaryDirectory(prefix="sam2-soak-") as tmp:
            repository = build_repository(
                args.export_dir, Path(tmp) / "repository", get_profile("cpu")
            )
            with LocalTritonServer(
                repository, args.http_port, args.grpc_port, args.metrics_port
            ) as server:
                assert server.pid is not None  # started by the context manager
                record = run_soak(server.http_url, server.grpc_url, server.pid, **soak)
    record = {**record_header(args.model, "as exported"), **record}
    print_summary(record)
    write_report(record, plot_soak, args.json, args.plot)
    return 1 if args.check and record["unexpected"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
