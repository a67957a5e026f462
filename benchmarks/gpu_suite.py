"""Video tracking speed on one device: the official SAM2VideoPredictor against this project's
tracker, in process and served, on the same frames, objects and concurrent videos.

    python -m sam2_triton.benchmarks.gpu_suite [--device cuda] [--model tiny] \
        [--checkpoint FILE | --random-weights] [--frames DIR] [--num-frames 30] \
        [--size 960x540] [--objects 1 3 8] [--streams 1 4 16] [--repeat 3] \
        [--systems official official_vos tracker tracker_tensorrt served] [--served-url H:P] \
        [--work-dir build/gpu_suite] [--json gpu_suite.json] [--plot gpu_suite.png]

Systems (`--systems`, all by default), each measured on the same videos:

* official: `SAM2VideoPredictor` in eager mode, as sam2's own benchmark (sam2/benchmark.py)
  runs it on CUDA: bf16 autocast and TF32; fp32 on the CPU;
* official_vos: the same built with `vos_optimized=True` (every component through
  `torch.compile(mode="max-autotune")`), bf16 autocast: CUDA only, as sam2's benchmark;
* tracker: this project's `VideoTracker` in this process with `TorchVideoNetworks` (bf16 on
  CUDA, fp32 on the CPU), answers built as track_video sends them (masks at the frame's size);
* tracker_tensorrt: the same tracker on TensorRT engines (gpu-bf16 profile, built here from an
  ONNX export) where TensorRT and a GPU are present;
* served: `track_video` of a Triton server (the one carried by nvidia-pytriton) on a repository
  of `--served-profile` (cpu on the CPU, gpu-torch on CUDA), one client per video; or, with
  `--served-url HOST:PORT`, of a server already running (its own model and weights).

A system that cannot run here is recorded with the reason instead of a number (the report's
"systems" entry), and the others go on. Cases: each `--objects` count on one video, and each
`--streams` count of videos with one object each, tracked concurrently (the tracker: one
thread per video, sharing the networks; served: one client per video; the official predictor
has no way to track videos together: one after another). Prompts: one click per object on
frame 0, outside the timing (sam2's benchmark adds its click before timing too). FPS = frames
tracked after the prompted one, over all videos / wall time: the official predictor's
`propagate_in_video` (frames loaded and resized by `init_state` beforehand, as in sam2's
benchmark; its masks stay on the device), the tracker's `track` from decoded RGB frames
(upload, resize, masks to the host included), served: JPEG bytes sent by the client to answers
received. One warm-up run per system (compilation), then `--repeat` runs per case: median.

Frames: a synthetic clip of moving discs (960x540 like the bedroom clip sam2's benchmark
uses; one video per stream, each its own seed) or `--frames DIR` (JPEG files named by frame
number, as SAM2VideoPredictor reads them; clicks on a grid). Weights: the official checkpoint
(downloaded to ./checkpoints when missing) or `--checkpoint FILE`; `--random-weights` writes a
random checkpoint as the tests do (perturbed, object scores raised so that objects stay
present and every frame runs the memory path), with a warning: speed does not depend on
weights, masks are meaningless. `--device cpu` is a small version (1 / 3 objects, 1 / 2
videos, 3 frames). Writes the report as JSON and a plot of FPS against objects and against
videos (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from sam2_triton.benchmarks.concurrency import concurrently
from sam2_triton.benchmarks.orchestration import (
    parse_size,
    preprocessing_mode,
    synchronize,
    synthetic_clip,
)
from sam2_triton.benchmarks.report import (
    add_output_arguments,
    plot_gpu_suite,
    record_header,
    write_report,
)
from sam2_triton.configs import ModelSpec, get_model

SYSTEMS = {
    "official": "SAM2VideoPredictor (eager)",
    "official_vos": "SAM2VideoPredictor (vos_optimized)",
    "tracker": "VideoTracker, PyTorch (in process)",
    "tracker_tensorrt": "VideoTracker, TensorRT (in process)",
    "served": "track_video (Triton)",
}


@dataclass(frozen=True)
class SuiteDefaults:
    """What a run measures unless told otherwise."""

    objects: tuple[int, ...]
    streams: tuple[int, ...]
    num_frames: int
    repeat: int


FULL = SuiteDefaults(objects=(1, 3, 8), streams=(1, 4, 16), num_frames=30, repeat=3)  # CUDA
SMALL = SuiteDefaults(objects=(1, 3), streams=(1, 2), num_frames=3, repeat=1)  # the CPU
DEFAULT_SIZE = "960x540"
JPEG_QUALITY = 95
TRACKER_PRECISION = {"cuda": "bf16", "cpu": "fp32"}
OFFICIAL_AUTOCAST = {"cuda": torch.bfloat16}  # sam2/benchmark.py; the CPU runs fp32
TENSORRT_PROFILE = "gpu-bf16"
SERVED_PROFILE = {"cuda": "gpu-torch", "cpu": "cpu"}
VOS_CPU_REASON = (
    "not run on the CPU: vos_optimized compiles every component with "
    "torch.compile(mode='max-autotune'), which sam2's own benchmark runs on CUDA only "
    "(sam2/benchmark.py asserts a CUDA device)"
)


class Unavailable(Exception):
    """A system that cannot run on this machine; the message says why."""


# -- weights -----------------------------------------------------------------------------------


def suite_weights(
    spec: ModelSpec, checkpoint: str | None, random_weights: bool, work_dir: Path
) -> tuple[Path, str]:
    """(checkpoint file every system loads, how the record names the weights)."""
    from sam2_triton.export.checkpoints import (
        RANDOM_WEIGHTS_WARNING,
        resolve_weights,
        write_random_checkpoint,
    )

    if random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_WARNING} (speed does not depend on them)", flush=True)
        path = write_random_checkpoint(spec, work_dir / f"random-{spec.checkpoint}")
        return path, "random"
    weights = resolve_weights(
        spec,
        checkpoint=None if checkpoint is None else Path(checkpoint),
        download_if_missing=checkpoint is None,
        progress=True,
    )
    print(weights.describe(), flush=True)
    assert weights.path is not None  # random weights are only those asked for above
    return weights.path, str(weights.path)


# -- videos ------------------------------------------------------------------------------------


@dataclass
class Video:
    """One video: its JPEG folder (what SAM2VideoPredictor reads), the same frames as JPEG
    bytes (what a client sends) and decoded (RGB uint8 [H, W, 3], what the tracker takes), and
    a click per object on frame 0."""

    folder: Path
    jpegs: list[bytes]
    frames: list[np.ndarray]
    clicks: dict[int, tuple[float, float]]

    @property
    def size(self) -> str:
        height, width = self.frames[0].shape[:2]
        return f"{width}x{height}"


def jpeg_paths(folder: Path) -> list[Path]:
    """The JPEG frames of `folder` in frame order (names are frame numbers, as
    SAM2VideoPredictor requires); ValueError when there are none or a name is not a number."""
    paths = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")]
    if not paths:
        raise ValueError(f"{folder} holds no JPEG frames (.jpg / .jpeg)")
    try:
        return sorted(paths, key=lambda p: int(p.stem))
    except ValueError:
        raise ValueError(
            f"{folder}: frame files must be named by their number (00000.jpg, ...), as "
            "SAM2VideoPredictor reads them"
        ) from None


def read_video(folder: Path, clicks: dict[int, tuple[float, float]]) -> Video:
    paths = jpeg_paths(folder)
    jpegs = [p.read_bytes() for p in paths]
    frames = [np.array(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs]
    return Video(folder, jpegs, frames, clicks)


def synthetic_videos(
    count: int, num_frames: int, size: tuple[int, int], objects: int, root: Path
) -> list[Video]:
    """`count` synthetic clips (seeds 0..count-1) written as JPEG folders under `root`."""
    width, height = size
    videos = []
    for seed in range(count):
        clip = synthetic_clip(num_frames, width, height, objects, seed=seed)
        folder = root / f"video{seed}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for t, frame in enumerate(clip.frames):
            Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=JPEG_QUALITY)
        videos.append(read_video(folder, clip.clicks(0)))
    return videos


def grid_clicks(objects: int, width: int, height: int) -> dict[int, tuple[float, float]]:
    """Object id -> a click on a grid over the frame (for frames of unknown content)."""
    columns = int(np.ceil(np.sqrt(objects)))
    rows = int(np.ceil(objects / columns))
    return {
        k + 1: ((k % columns + 0.5) * width / columns, (k // columns + 0.5) * height / rows)
        for k in range(objects)
    }


def folder_videos(
    source: Path, count: int, objects: int, num_frames: int | None, root: Path
) -> list[Video]:
    """The frames of `source` (its first `num_frames` when given, linked into `root`) as
    `count` videos (one per stream, the same frames each) with `objects` clicks on a grid."""
    paths = jpeg_paths(source)
    if num_frames is not None and num_frames < len(paths):
        folder = root / "frames"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for t, path in enumerate(paths[:num_frames]):
            (folder / f"{t:05d}{path.suffix}").symlink_to(path.resolve())
        source = folder
    with Image.open(paths[0]) as first:
        width, height = first.size
    video = read_video(source, grid_clicks(objects, width, height))
    return [video] * count


def plan_objects(video: Video, objects: int) -> list[tuple[int, Video, dict]]:
    """One video with its first `objects` clicks: [(stream index, video, clicks)]."""
    if objects > len(video.clicks):
        raise ValueError(f"{objects} objects but the video has {len(video.clicks)} clicks")
    return [(0, video, dict(list(video.clicks.items())[:objects]))]


def plan_streams(videos: Sequence[Video], streams: int) -> list[tuple[int, Video, dict]]:
    """`streams` videos with one object each: object 1 of video i, or object i + 1 where the
    videos are one folder's frames (so that the streams track different objects)."""
    plan = []
    for i in range(streams):
        video = videos[i]
        shared = sum(other is video for other in videos) > 1
        obj_id = (1 + i % len(video.clicks)) if shared else 1
        plan.append((i, video, {obj_id: video.clicks[obj_id]}))
    return plan


# -- systems -----------------------------------------------------------------------------------


Plan = Sequence[tuple[int, Video, dict]]


class Runner(Protocol):
    description: str  # precision and how it runs, for the record

    def run(self, plan: Plan) -> tuple[int, float]:
        """Track the plan's videos (prompts first, untimed): (frames tracked, seconds)."""
        ...

    def close(self) -> None: ...


@contextlib.contextmanager
def official_precision(device: torch.device) -> Iterator[None]:
    """sam2's benchmark settings on CUDA (bf16 autocast, TF32 on); nothing on the CPU."""
    dtype = OFFICIAL_AUTOCAST.get(device.type)
    with torch.inference_mode():
        if dtype is None:
            yield
            return
        matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            with torch.autocast(device.type, dtype=dtype):
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (
                matmul,
                cudnn,
            )


class OfficialRunner:
    """SAM2VideoPredictor: `init_state` once per stream (frames loaded, not timed), then per
    run: `reset_state`, one click per object, and the timed `propagate_in_video` of every
    stream, one after another."""

    def __init__(self, predictor: Any, device: torch.device, description: str) -> None:
        self.predictor = predictor
        self.device = device
        self.description = description
        self.states: dict[tuple[int, Path], Any] = {}

    def _state(self, index: int, video: Video) -> Any:
        key = (index, video.folder)
        if key not in self.states:
            self.states[key] = self.predictor.init_state(video_path=str(video.folder))
        return self.states[key]

    def run(self, plan: Plan) -> tuple[int, float]:
        with official_precision(self.device):
            states = []
            for index, video, clicks in plan:
                state = self._state(index, video)
                self.predictor.reset_state(state)
                for obj_id, xy in clicks.items():
                    self.predictor.add_new_points_or_box(
                        state,
                        frame_idx=0,
                        obj_id=obj_id,
                        points=np.array([xy], np.float32),
                        labels=np.array([1], np.int32),
                    )
                states.append(state)
            synchronize(self.device)
            start = time.perf_counter()
            frames = 0
            for state in states:
                for _ in self.predictor.propagate_in_video(state):
                    frames += 1
            synchronize(self.device)
            seconds = time.perf_counter() - start
        return frames - len(states), seconds  # frames after the prompted one

    def close(self) -> None:
        self.states.clear()
        self.predictor = None


class TrackerRunner:
    """VideoTracker in this process: one tracker per stream sharing `networks`; frame 0 with
    its prompts untimed, then the streams' other frames, one thread per stream."""

    def __init__(
        self,
        networks: Any,
        metadata: dict[str, Any],
        device: torch.device,
        preprocessing: str,
        description: str,
    ) -> None:
        from sam2_triton.python_backend.video.answers import AnswerFormat

        self.networks = networks
        self.metadata = metadata
        self.device = device
        self.preprocessing = preprocessing
        self.description = description
        self.answer = AnswerFormat("masks")

    def run(self, plan: Plan) -> tuple[int, float]:
        from sam2_triton.python_backend.video.answers import answer_tensors
        from sam2_triton.python_backend.video.tracker import VideoTracker

        trackers = []
        with torch.inference_mode():
            for _, video, clicks in plan:
                tracker = VideoTracker(
                    self.networks,
                    self.metadata,
                    num_frames=len(video.frames),
                    preprocessing=self.preprocessing,
                    device=self.device,
                )
                for obj_id, xy in clicks.items():
                    tracker.add_prompt(0, obj_id, points=[xy], labels=[1])
                answer_tensors(tracker.track(0, video.frames[0]), self.answer, tracker.nbytes)
                trackers.append((tracker, video))
        synchronize(self.device)

        def stream(tracker: Any, video: Video) -> Callable[[], None]:
            def track() -> None:
                with torch.inference_mode():
                    for t in range(1, len(video.frames)):
                        result = tracker.track(t, video.frames[t])
                        answer_tensors(result, self.answer, tracker.nbytes)

            return track

        start = time.perf_counter()
        concurrently([stream(tracker, video) for tracker, video in trackers])
        synchronize(self.device)
        seconds = time.perf_counter() - start
        return sum(len(video.frames) - 1 for _, video in trackers), seconds

    def close(self) -> None:
        self.networks = None


class ServedRunner:
    """track_video through the client: per stream a session whose frame 0 (with the clicks) is
    sent untimed, then the other frames' JPEG bytes, sessions concurrently."""

    def __init__(self, url: str, protocol: str, description: str, stop: Callable[[], object]):
        self.url = url
        self.protocol = protocol
        self.description = description
        self._stop = stop

    def run(self, plan: Plan) -> tuple[int, float]:
        from sam2_triton.client import Sam2Client

        with contextlib.ExitStack() as stack:
            sessions = []
            for _, video, clicks in plan:
                client = stack.enter_context(Sam2Client(self.url, self.protocol))
                session = stack.enter_context(client.video_session(num_frames=len(video.jpegs)))
                points = {obj_id: ([xy], [1]) for obj_id, xy in clicks.items()}
                session.track(video.jpegs[0], points=points)
                sessions.append((session, video))

            def stream(session: Any, video: Video) -> Callable[[], None]:
                def track() -> None:
                    for _ in session.track_frames(video.jpegs[1:]):
                        pass

                return track

            start = time.perf_counter()
            concurrently([stream(session, video) for session, video in sessions])
            seconds = time.perf_counter() - start
        return sum(len(video.jpegs) - 1 for _, video in sessions), seconds

    def close(self) -> None:
        self._stop()


@dataclass
class Context:
    """What preparing a system needs: device, model, weights, where to write, options."""

    device: torch.device
    spec: ModelSpec
    checkpoint: Path
    work_dir: Path
    protocol: str
    served_profile: str
    ports: tuple[int, int, int]
    served_url: str | None = None  # a running server's track_video instead of starting one
    random_weights: bool = False
    official_model: Any = None  # the eager SAM2VideoPredictor, shared by official_vos
    _metadata: dict[str, Any] | None = None
    _export_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    def official(self) -> Any:
        from sam2_triton.export.checkpoints import build_sam2_model

        if self.official_model is None:
            self.official_model = build_sam2_model(
                self.spec, checkpoint=self.checkpoint, device=str(self.device)
            )
        return self.official_model

    def metadata(self) -> dict[str, Any]:
        """What the tracker reads of metadata.json, from the official model of the weights."""
        from sam2_triton.export.onnx_export import OPSET, build_metadata

        if self._metadata is None:
            checkpoint = {"file": self.checkpoint.name, "random_weights": self.random_weights}
            self._metadata = build_metadata(self.official(), self.spec, checkpoint, {}, OPSET)
        return self._metadata

    def export_dir(self) -> Path:
        """An ONNX export of the weights under the work folder (made once)."""
        from sam2_triton.export.checkpoints import build_sam2_model, sha256_file
        from sam2_triton.export.metadata import METADATA_FILE
        from sam2_triton.export.onnx_export import export_model

        if self._export_dir is None:
            directory = self.work_dir / "export" / self.spec.name
            if not (directory / METADATA_FILE).is_file():
                print(f"exporting {self.spec.name} to {directory} ...", flush=True)
                model = build_sam2_model(self.spec, checkpoint=self.checkpoint)
                checkpoint = {
                    "file": self.checkpoint.name,
                    "sha256": sha256_file(self.checkpoint),
                    "random_weights": self.random_weights,
                }
                export_model(model, self.spec, directory, checkpoint=checkpoint)
            self._export_dir = directory
        return self._export_dir


def prepare_official(ctx: Context) -> Runner:
    precision = "bf16 autocast + TF32" if ctx.device.type in OFFICIAL_AUTOCAST else "fp32"
    return OfficialRunner(ctx.official(), ctx.device, f"eager, {precision}")


def prepare_official_vos(ctx: Context) -> Runner:
    if ctx.device.type != "cuda":
        raise Unavailable(VOS_CPU_REASON)
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(
        ctx.spec.config, ckpt_path=None, device=str(ctx.device), vos_optimized=True
    )
    predictor.load_state_dict(ctx.official().state_dict())
    return OfficialRunner(
        predictor, ctx.device, "vos_optimized=True (torch.compile max-autotune), bf16 autocast"
    )


def prepare_tracker(ctx: Context) -> Runner:
    from sam2_triton.python_backend.video.networks import TorchVideoNetworks

    precision = TRACKER_PRECISION.get(ctx.device.type, "fp32")
    networks = TorchVideoNetworks(ctx.checkpoint, ctx.spec.name, ctx.device, precision)
    return _tracker_runner(ctx, networks, f"PyTorch networks, {precision}")


def _tracker_runner(ctx: Context, networks: Any, runtime: str) -> Runner:
    """The in-process tracker over `networks` (described by `runtime` in the record)."""
    preprocessing = preprocessing_mode()
    return TrackerRunner(
        networks,
        ctx.metadata(),
        ctx.device,
        preprocessing,
        f"{runtime}, {preprocessing} preprocessing",
    )


def prepare_tracker_tensorrt(ctx: Context) -> Runner:
    from sam2_triton.configs import get_profile
    from sam2_triton.export.tensorrt.runtime import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason:
        raise Unavailable(reason)
    from sam2_triton.export.tensorrt.builder import build_engines
    from sam2_triton.python_backend.video.networks import TensorrtVideoNetworks

    profile = get_profile(TENSORRT_PROFILE)
    export_dir = ctx.export_dir()
    engine_dir = export_dir / "engines" / profile.name
    print(f"building TensorRT engines ({profile.name}) in {engine_dir} ...", flush=True)
    build_engines(export_dir, engine_dir, profile)
    networks = TensorrtVideoNetworks(engine_dir, ctx.device)
    return _tracker_runner(ctx, networks, f"TensorRT engines, {profile.name} profile")


def prepare_served(ctx: Context) -> Runner:
    from sam2_triton.configs import get_profile
    from sam2_triton.serving.local_server import LocalTritonServer, pytriton_server_dir
    from sam2_triton.serving.repository import build_repository

    if ctx.served_url is not None:  # the user's server: its model and profile, left running
        description = f"the server at {ctx.served_url}, {ctx.protocol}"
        return ServedRunner(ctx.served_url, ctx.protocol, description, lambda: None)
    try:
        pytriton_server_dir()
    except Exception as exc:  # not installed, or without a stub for this Python
        raise Unavailable(str(exc)) from None
    profile = get_profile(ctx.served_profile)
    repository = build_repository(
        ctx.export_dir(),
        ctx.work_dir / "model_repository",
        profile,
        checkpoint=ctx.checkpoint if profile.runtime == "torch" else None,
        warmup=False,
    )
    http_port, grpc_port, metrics_port = ctx.ports
    server = LocalTritonServer(
        repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_file=ctx.work_dir / "tritonserver.log",
    )
    try:
        server.start(timeout_s=600)
    except BaseException:
        server.stop()
        raise
    url = f"localhost:{grpc_port if ctx.protocol == 'grpc' else http_port}"
    return ServedRunner(
        url, ctx.protocol, f"{profile.name} profile, {ctx.protocol}", lambda: server.stop()
    )


PREPARE: dict[str, Callable[[Context], Runner]] = {
    "official": prepare_official,
    "official_vos": prepare_official_vos,
    "tracker": prepare_tracker,
    "tracker_tensorrt": prepare_tracker_tensorrt,
    "served": prepare_served,
}


# -- the suite ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSpec:
    objects: int
    streams: int


def case_specs(objects: Sequence[int], streams: Sequence[int]) -> list[CaseSpec]:
    """Objects on one video, then videos of one object (the 1-video case once)."""
    specs = [CaseSpec(o, 1) for o in objects]
    specs += [CaseSpec(1, s) for s in streams if CaseSpec(1, s) not in specs]
    return specs


def failure_reason(exc: BaseException) -> str:
    """The exception as one line, with where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {text}{where}"


def measure_system(
    runner: Runner,
    videos: Sequence[Video],
    specs: Sequence[CaseSpec],
    repeat: int,
    name: str,
    warmup_runs: int = 1,
) -> list[dict[str, Any]]:
    """`warmup_runs` runs of 1 object on 1 video (compilation, caches), then `repeat` runs per
    case."""
    for _ in range(warmup_runs):
        runner.run(plan_objects(videos[0], 1))
    results = []
    for spec in specs:
        plan = (
            plan_objects(videos[0], spec.objects)
            if spec.streams == 1
            else plan_streams(videos, spec.streams)
        )
        runs = []
        frames = 0
        for _ in range(repeat):
            frames, seconds = runner.run(plan)
            runs.append(frames / seconds)
            print(
                f"{name:17s} {spec.objects:2d} objects {spec.streams:3d} videos: {frames} frames "
                f"in {seconds:8.2f} s = {frames / seconds:8.2f} FPS",
                flush=True,
            )
        results.append(
            {
                "system": name,
                "objects": spec.objects,
                "streams": spec.streams,
                "frames": frames,
                "fps": statistics.median(runs),
                "runs_fps": runs,
            }
        )
    return results


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    from sam2_triton.python_backend.video.device import resolve_device

    device = resolve_device(args.device)
    defaults = FULL if device.type == "cuda" else SMALL
    objects: Sequence[int] = args.objects or defaults.objects
    streams: Sequence[int] = args.streams or defaults.streams
    repeat: int = args.repeat or defaults.repeat
    num_frames: int | None = args.num_frames or (None if args.frames else defaults.num_frames)
    spec = get_model(args.model)
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint, weights = suite_weights(spec, args.checkpoint, args.random_weights, work_dir)
    if args.frames:
        videos = folder_videos(
            Path(args.frames),
            max(streams),
            max(max(objects), max(streams)),
            num_frames,
            work_dir / "clips",
        )
        clip = str(args.frames)
    else:
        assert num_frames is not None
        videos = synthetic_videos(
            max(streams), num_frames, args.size, max(objects), work_dir / "clips"
        )
        clip = "synthetic moving discs"
    for video in videos:
        if len(video.frames) < 2:
            raise SystemExit(f"{video.folder}: at least 2 frames (a prompt and one to track)")
    ctx = Context(
        device,
        spec,
        checkpoint,
        work_dir,
        args.protocol,
        args.served_profile or SERVED_PROFILE.get(device.type, "cpu"),
        (args.http_port, args.grpc_port, args.metrics_port),
        served_url=args.served_url,
        random_weights=args.random_weights,
    )
    systems: dict[str, dict[str, Any]] = {}
    cases: list[dict[str, Any]] = []
    record: dict[str, Any] = {
        **record_header(spec.name, weights),
        "device": str(device),
        "clip": clip,
        "size": videos[0].size,
        "frames_per_video": len(videos[0].frames),
        "repeat": repeat,
        "warmup_runs": args.warmup_runs,
        "fps": "frames tracked after the prompted one, all videos, / wall time; median of runs",
        "systems": systems,
        "cases": cases,
    }
    specs = case_specs(objects, streams)
    for name in args.systems:
        entry: dict[str, Any] = {"label": SYSTEMS[name]}
        systems[name] = entry
        print(f"\n== {name}: {SYSTEMS[name]}", flush=True)
        runner = None
        try:
            runner = PREPARE[name](ctx)
            entry["description"] = runner.description
            cases += measure_system(runner, videos, specs, repeat, name, args.warmup_runs)
            entry["status"] = "measured"
        except Unavailable as exc:
            entry.update(status="unavailable", reason=str(exc))
            print(f"{name}: unavailable: {exc}", flush=True)
        except Exception as exc:  # recorded; the other systems still run
            entry.update(status="failed", reason=failure_reason(exc))
            print(f"{name}: FAILED: {entry['reason']}", flush=True)
            traceback.print_exc()
        finally:
            if runner is not None:
                with contextlib.suppress(Exception):
                    runner.close()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return record


def table(record: dict[str, Any]) -> str:
    """FPS per case (rows) and system (columns); reasons of the systems not measured."""
    names = [n for n, s in record["systems"].items() if s.get("status") == "measured"]
    fps = {(c["system"], c["objects"], c["streams"]): c["fps"] for c in record["cases"]}
    keys = sorted({(c["objects"], c["streams"]) for c in record["cases"]}, key=lambda k: k[::-1])
    width = max([18] + [len(n) + 2 for n in names])
    lines = [f"{'objects':>8s}{'videos':>8s}" + "".join(f"{n:>{width}s}" for n in names)]
    for objects, streams in keys:
        values = [fps.get((n, objects, streams)) for n in names]
        lines.append(
            f"{objects:8d}{streams:8d}"
            + "".join(f"{'-':>{width}s}" if v is None else f"{v:{width}.2f}" for v in values)
        )
    lines.append("(frames per second)")
    for name, system in record["systems"].items():
        if system.get("status") != "measured":
            lines.append(f"{name}: {system.get('status')}: {system.get('reason')}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cpu, cuda:1, ...")
    parser.add_argument("--model", default="tiny")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--checkpoint", help="checkpoint file (default: the official one in ./checkpoints)"
    )
    weights.add_argument(
        "--random-weights", action="store_true", help="random weights (a warning; same speed)"
    )
    parser.add_argument("--frames", help="folder of JPEG frames (default: a synthetic clip)")
    parser.add_argument("--num-frames", type=int, help="frames per video (cuda 30, cpu 3)")
    parser.add_argument(
        "--size", type=parse_size, default=parse_size(DEFAULT_SIZE), help="synthetic frames WxH"
    )
    parser.add_argument("--objects", type=int, nargs="+", help="cuda: 1 3 8, cpu: 1 3")
    parser.add_argument("--streams", type=int, nargs="+", help="videos; cuda: 1 4 16, cpu: 1 2")
    parser.add_argument("--repeat", type=int, help="runs per case (cuda 3, cpu 1)")
    parser.add_argument(
        "--warmup-runs", type=int, default=1, help="untimed runs per system first (1 object)"
    )
    parser.add_argument(
        "--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS), help="what to run"
    )
    parser.add_argument(
        "--served-profile", help="profile of the served repository (cpu: cpu, cuda: gpu-torch)"
    )
    parser.add_argument(
        "--served-url",
        help="HOST:PORT of a running server (--protocol) to measure as `served` instead of "
        "starting one; its own model and weights",
    )
    parser.add_argument("--work-dir", default="build/gpu_suite", help="clips, export, repository")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    for name in ("objects", "streams"):
        values = getattr(args, name) or []
        if any(v < 1 for v in values):
            parser.error(f"--{name} must be >= 1")
    if args.num_frames is not None and args.num_frames < 2:
        parser.error("--num-frames must be >= 2 (a prompted frame and one to track)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # sam2's autocast spelling
        record = run_suite(args)
    print()
    print(table(record))
    write_report(record, plot_gpu_suite, args.json, args.plot)
    return record


if __name__ == "__main__":
    main()
