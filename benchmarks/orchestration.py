"""What the video tracker itself costs per frame: host time and device-to-host transfers, with
networks that cost nothing.

    python -m sam2_triton.benchmarks.orchestration [--device cpu|cuda] [--objects 1 4 16] \
        [--modes sam2 samurai] [--answers full compact] [--frames 20] [--warmup 8] \
        [--size 1280x720] [--model tiny] [--json orchestration.json] [--plot orchestration.png]

`VideoTracker` runs on `--device` with `InstantNetworks`: the four networks of the protocol
(python_backend/video/networks.py) answered at once from output tensors allocated once, of the
contract's shapes, on that device. Their content is realistic where the tracker's decisions
read it: one positive blob of mask logits per object (so masks are not empty and SAMURAI finds
candidate boxes), object-score logits well above the presence threshold (every object present,
so every frame takes the full memory path). What remains is the tracker's own work: frame
upload and preprocessing, memory selection, stacking, the decoder heads, SAMURAI's filter,
lazy masks and boxes, and the copies to the host.

Frames are synthetic and deterministic (`synthetic_clip`), prompts one click per object on
frame 0. Cases: every combination of objects, mode ("sam2", or "samurai": SAMURAI's motion-aware
mask choice and memory selection) and answer ("full": `result.masks` and `result.boxes` read,
full-size masks at the frame's size; "compact": what a sequence that asked for no masks gets,
built by python_backend/video/answers.py). Each case tracks `--warmup` frames (frame 0, the
prompt, among them; enough for the memory bank to fill) and then `--frames` measured frames:
host milliseconds per frame (median of the frames; `torch.cuda.synchronize` before each clock
read on CUDA) and device-to-host transfers per frame (`tracker.transfers`), which must not grow
with the number of objects. Writes one record per case (benchmarks/report.py) and a plot of
both against objects.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sam2_triton.benchmarks.report import (
    add_output_arguments,
    plot_orchestration,
    record_header,
    write_report,
)
from sam2_triton.configs import get_model
from sam2_triton.export.contract import (
    EMBED_SIZE,
    HIDDEN_DIM,
    HIGH_RES_DIMS,
    LOW_RES_MASK_SIZE,
    MEMORY_DIM,
    NUM_MASK_TOKENS,
)

MODES = ("sam2", "samurai")
ANSWERS = ("full", "compact")
DEFAULT_OBJECTS = (1, 4, 16)
DEFAULT_SIZE = "1280x720"
BLOB_LOGIT = 8.0  # mask logit inside an object's blob; -BLOB_LOGIT outside
OBJECT_SCORE_LOGIT = 6.0  # well above SAM 2's (0) and SAMURAI's (-1) presence thresholds
TOKEN_IOUS = (0.7, 0.9, 0.8, 0.6)  # predicted IoU per mask token: token 1 wins the argmax
TOKEN_RADII = (0.09, 0.1, 0.11, 0.12)  # blob radius per token, fraction of the mask side
COMPACT_ANSWER_SCALE = 4  # compact answers: small masks at a quarter of each side of the frame
PREPROCESSING = "device"  # frames resized on the tracker's device (the GPU profiles' mode)
FALLBACK_PREPROCESSING = "image"


# -- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticClip:
    """Frames of discs moving over a textured background, and where each disc is."""

    frames: list[np.ndarray]  # RGB uint8 [H, W, 3] each
    centres: np.ndarray  # float32 [frames, objects, 2]: (x, y) pixels of each disc's centre
    radius: float  # of every disc, pixels

    def clicks(self, frame_idx: int = 0) -> dict[int, tuple[float, float]]:
        """Object id (1..N) -> a click on its disc's centre on `frame_idx`."""
        return {k + 1: (float(x), float(y)) for k, (x, y) in enumerate(self.centres[frame_idx])}


DISC_COLOURS = np.array(
    [
        (230, 60, 40),
        (40, 200, 230),
        (240, 220, 60),
        (90, 220, 90),
        (200, 80, 220),
        (250, 150, 40),
        (30, 90, 200),
        (240, 240, 240),
    ],
    dtype=np.uint8,
)


def synthetic_clip(
    num_frames: int, width: int, height: int, num_objects: int, seed: int = 0
) -> SyntheticClip:
    """A deterministic clip: `num_objects` discs on a grid, each moving a few pixels per frame
    in its own direction (bouncing off the borders), over a smooth textured background."""
    if num_frames < 1 or num_objects < 1 or width < 16 or height < 16:
        raise ValueError("a clip needs >= 1 frame, >= 1 object and at least 16x16 pixels")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    background = np.stack(
        [
            80 + 40 * np.sin(xx / 17.0) * np.cos(yy / 29.0),
            90 + 40 * np.cos(yy / 23.0),
            110 + 30 * np.sin((xx + yy) / 41.0),
        ],
        axis=-1,
    ).astype(np.uint8)
    columns = int(np.ceil(np.sqrt(num_objects * width / height)))
    rows = int(np.ceil(num_objects / columns))
    cell = min(width / columns, height / rows)
    radius = max(3.0, 0.3 * cell)
    grid = np.array([((k % columns) + 0.5, (k // columns) + 0.5) for k in range(num_objects)])
    start = grid * (width / columns, height / rows)
    velocity = rng.uniform(-1.0, 1.0, size=(num_objects, 2)) * 0.01 * min(width, height)
    centres = np.empty((num_frames, num_objects, 2), np.float32)
    low, high = np.array([radius, radius]), np.array([width - radius, height - radius])
    position = start.copy()
    frames = []
    for t in range(num_frames):
        frame = background.copy()
        for k, (cx, cy) in enumerate(position):
            x0, x1 = int(max(cx - radius, 0)), int(min(cx + radius + 1, width))
            y0, y1 = int(max(cy - radius, 0)), int(min(cy + radius + 1, height))
            inside = (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 <= radius**2
            frame[y0:y1, x0:x1][inside] = DISC_COLOURS[k % len(DISC_COLOURS)]
        centres[t] = position
        frames.append(frame)
        position = position + velocity
        bounced = (position < low) | (position > high)
        velocity = np.where(bounced, -velocity, velocity)
        position = np.clip(position, low, high)
    return SyntheticClip(frames, centres, float(radius))


# -- networks ----------------------------------------------------------------------------------


def blob_logits(num_objects: int, size: int = LOW_RES_MASK_SIZE) -> torch.Tensor:
    """float32 [num_objects, NUM_MASK_TOKENS, size, size]: per object a disc of +BLOB_LOGIT
    (its own place on a grid; a slightly larger radius per token) on -BLOB_LOGIT."""
    columns = int(np.ceil(np.sqrt(num_objects)))
    cell = size / columns
    k = torch.arange(num_objects)
    cx = ((k % columns).float() + 0.5) * cell
    cy = (torch.div(k, columns, rounding_mode="floor").float() + 0.5) * cell
    axis = torch.arange(size, dtype=torch.float32)
    squared = (axis[None, None, :] - cx[:, None, None]) ** 2 + (
        axis[None, :, None] - cy[:, None, None]
    ) ** 2  # [N, y, x]
    radii = torch.tensor(TOKEN_RADII) * 2 * cell  # [tokens]
    inside = squared[:, None] <= (radii**2)[None, :, None, None]
    return torch.where(inside, BLOB_LOGIT, -BLOB_LOGIT).to(torch.float32)


class InstantNetworks:
    """`VideoNetworks` that answer at once: slices of outputs allocated once on `device`.

    Every call returns views of the same tensors (the first B rows for a batch of B), so a
    call costs no device work; contents are fixed (see the module docstring). `max_objects`
    bounds the batch of every call. `calls` counts the calls per network.
    """

    def __init__(self, device: str | torch.device, max_objects: int, seed: int = 0) -> None:
        self.device = torch.device(device)
        self.max_objects = int(max_objects)
        generator = torch.Generator().manual_seed(seed)
        n, e = self.max_objects, EMBED_SIZE

        def features(*shape: int) -> torch.Tensor:
            return (torch.randn(shape, generator=generator) * 0.1).to(self.device)

        self.encoded = {
            "image_embed": features(1, HIDDEN_DIM, e, e),
            "high_res_feats_0": features(1, HIGH_RES_DIMS[0], 4 * e, 4 * e),
            "high_res_feats_1": features(1, HIGH_RES_DIMS[1], 2 * e, 2 * e),
        }
        self.decoded = {
            "masks": blob_logits(n).to(self.device),
            "iou_scores": torch.tensor([TOKEN_IOUS] * n, dtype=torch.float32).to(self.device),
            "object_pointers": features(n, NUM_MASK_TOKENS, HIDDEN_DIM),
            "object_score_logits": torch.full((n, 1), OBJECT_SCORE_LOGIT).to(self.device),
        }
        self.memory = {"memory_features": features(n, MEMORY_DIM, e, e)}
        self.attended = {"conditioned_features": features(n, HIDDEN_DIM, e, e)}
        self.calls = {"encode": 0, "decode": 0, "encode_memory": 0, "attend": 0}

    def _rows(self, network: str, outputs: dict[str, torch.Tensor], batch: int):
        if batch > self.max_objects:
            raise ValueError(
                f"{network} called with a batch of {batch}; these networks hold "
                f"{self.max_objects} rows"
            )
        self.calls[network] += 1
        return {name: tensor[:batch] for name, tensor in outputs.items()}

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.shape[0] != 1:
            raise ValueError(f"one frame per call, not {image.shape[0]}")
        return self._rows("encode", self.encoded, 1)

    def decode(self, inputs) -> dict[str, torch.Tensor]:
        return self._rows("decode", self.decoded, int(inputs["point_coords"].shape[0]))

    def encode_memory(self, inputs) -> dict[str, torch.Tensor]:
        return self._rows("encode_memory", self.memory, int(inputs["mask_logits"].shape[0]))

    def attend(self, inputs) -> dict[str, torch.Tensor]:
        return self._rows("attend", self.attended, int(inputs["current_features"].shape[0]))


def tracker_metadata(model: str) -> dict[str, Any]:
    """What `VideoTracker` reads of an export's metadata.json, built from the official model of
    `model` (its settings, decoder settings and constants; random weights, which the tracker's
    timing does not depend on). No graphs are exported."""
    from sam2_triton.export.checkpoints import build_sam2_model
    from sam2_triton.export.onnx_export import OPSET, build_metadata

    spec = get_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning: weights are not used
        sam2_model = build_sam2_model(spec, random_weights=True)
    return build_metadata(sam2_model, spec, {"random_weights": True}, {}, OPSET)


def preprocessing_mode() -> str:
    """ "device" where the tracker offers it, else the image predictor's ("image"), said once."""
    from sam2_triton.python_backend.video.frames import PREPROCESSINGS

    if PREPROCESSING in PREPROCESSINGS:
        return PREPROCESSING
    print(
        f"note: preprocessing {PREPROCESSING!r} is not available "
        f"(modes: {', '.join(PREPROCESSINGS)}); using {FALLBACK_PREPROCESSING!r}",
        flush=True,
    )
    return FALLBACK_PREPROCESSING


# -- answers -----------------------------------------------------------------------------------


def answer_formats(size: tuple[int, int]) -> dict[str, Any]:
    """The answer format of each answer (python_backend/video/answers.py) for frames of `size`
    (W, H): "full" is the default kind (masks at the frame's size), "compact" small masks at a
    COMPACT_ANSWER_SCALE-th of each side."""
    from sam2_triton.python_backend.video.answers import AnswerFormat

    width, height = size
    compact = (max(1, height // COMPACT_ANSWER_SCALE), max(1, width // COMPACT_ANSWER_SCALE))
    return {"full": AnswerFormat("masks"), "compact": AnswerFormat("small_masks", compact)}


def describe_answer(answer: Any) -> str:
    """An answer format in words, for the record."""
    if answer.size is None:
        return f"{answer.kind} at the frame's size"
    height, width = answer.size
    return f"{answer.kind} at {width}x{height}"


# -- one case ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    mode: str
    objects: int
    answer: str


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that clocks read on the host include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(
    case: Case,
    device: torch.device,
    metadata: dict[str, Any],
    clip: SyntheticClip,
    warmup: int,
    preprocessing: str,
    answer_format: Any,
) -> tuple[list[float], float]:
    """Track the clip's first `warmup` frames, then time the rest: host milliseconds of each
    measured frame (track + the answer's tensors, as track_video builds them) and transfers per
    measured frame."""
    from sam2_triton.python_backend.samurai import SamuraiSettings
    from sam2_triton.python_backend.video.answers import answer_tensors
    from sam2_triton.python_backend.video.tracker import VideoTracker

    networks = InstantNetworks(device, case.objects)
    tracker = VideoTracker(
        networks,
        metadata,
        preprocessing=preprocessing,
        samurai=SamuraiSettings.load() if case.mode == "samurai" else None,
        device=device,
    )
    for obj_id, xy in list(clip.clicks(0).items())[: case.objects]:
        tracker.add_prompt(0, obj_id, points=[xy], labels=[1])

    def step(t: int) -> dict[str, np.ndarray]:
        return answer_tensors(tracker.track(t, clip.frames[t]), answer_format, tracker.nbytes)

    with torch.inference_mode():
        for t in range(warmup):
            step(t)
        synchronize(device)
        tracker.transfers.reset()
        frame_ms = []
        for t in range(warmup, len(clip.frames)):
            start = time.perf_counter()
            step(t)
            synchronize(device)
            frame_ms.append((time.perf_counter() - start) * 1e3)
        transfers = tracker.transfers.reset()
    return frame_ms, transfers / len(frame_ms)


def cases(objects: Sequence[int], modes: Sequence[str], answers: Sequence[str]) -> Iterator[Case]:
    for mode in modes:
        for answer in answers:
            for count in objects:
                yield Case(mode, count, answer)


def measure(
    device: str,
    objects: Sequence[int] = DEFAULT_OBJECTS,
    modes: Sequence[str] = MODES,
    answers: Sequence[str] = ANSWERS,
    frames: int = 20,
    warmup: int = 8,
    size: tuple[int, int] = (1280, 720),
    model: str = "tiny",
) -> dict[str, Any]:
    """The benchmark's record: header, settings, and one entry per case under "cases"."""
    if frames < 1 or warmup < 1:
        raise ValueError("at least 1 warm-up frame (the prompt) and 1 measured frame")
    from sam2_triton.python_backend.host_threads import limit_host_blas_threads
    from sam2_triton.python_backend.video.device import resolve_device

    limit_host_blas_threads()  # as track_video's process runs the tracker
    resolved = resolve_device(device)
    width, height = size
    clip = synthetic_clip(warmup + frames, width, height, max(objects))
    metadata = tracker_metadata(model)
    preprocessing = preprocessing_mode()
    formats = answer_formats(size)
    measured: list[dict[str, Any]] = []
    frame_ms: list[list[float]] = []
    record: dict[str, Any] = {
        **record_header(get_model(model).name, "none (instant stand-in networks)"),
        "networks": "InstantNetworks (outputs allocated once, no device work)",
        "size": f"{width}x{height}",
        "frames": frames,
        "warmup_frames": warmup,
        "preprocessing": preprocessing,
        "answers": {name: describe_answer(formats[name]) for name in answers},
        "host_ms_per_frame": "median over the measured frames (track + answer)",
        "cases": measured,
        "frame_ms": frame_ms,  # per case (same order): every measured frame, milliseconds
    }
    for case in cases(objects, modes, answers):
        times, transfers = run_case(
            case, resolved, metadata, clip, warmup, preprocessing, formats[case.answer]
        )
        measured.append(
            {
                "device": str(resolved),
                "mode": case.mode,
                "objects": case.objects,
                "answer": case.answer,
                "host_ms_per_frame": statistics.median(times),
                "transfers_per_frame": transfers,
            }
        )
        frame_ms.append(times)
        print(
            f"{case.mode:8s} {case.answer:8s} {case.objects:3d} objects: "
            f"{statistics.median(times):8.2f} ms median, {statistics.fmean(times):8.2f} ms mean, "
            f"{transfers:5.2f} transfers per frame",
            flush=True,
        )
    return record


def table(record: dict[str, Any]) -> str:
    """The cases as a text table (median and mean host ms, transfers per frame)."""
    lines = [
        f"{'device':8s}{'mode':9s}{'answer':9s}{'objects':>8s}{'median ms':>11s}"
        f"{'mean ms':>10s}{'transfers':>11s}"
    ]
    for case, times in zip(record["cases"], record["frame_ms"]):
        lines.append(
            f"{case['device']:8s}{case['mode']:9s}{case['answer']:9s}{case['objects']:8d}"
            f"{case['host_ms_per_frame']:11.2f}{statistics.fmean(times):10.2f}"
            f"{case['transfers_per_frame']:11.2f}"
        )
    return "\n".join(lines)


def parse_size(value: str) -> tuple[int, int]:
    """ "WxH" -> (W, H)."""
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, not {value!r}") from None
    return width, height


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--objects", type=int, nargs="+", default=list(DEFAULT_OBJECTS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--answers", nargs="+", choices=ANSWERS, default=list(ANSWERS))
    parser.add_argument("--frames", type=int, default=20, help="measured frames per case")
    parser.add_argument(
        "--warmup", type=int, default=8, help="frames tracked first, not measured (the prompt)"
    )
    parser.add_argument("--size", type=parse_size, default=parse_size(DEFAULT_SIZE))
    parser.add_argument("--model", default="tiny", help="whose settings the tracker uses")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    record = measure(
        args.device,
        args.objects,
        args.modes,
        args.answers,
        args.frames,
        args.warmup,
        args.size,
        args.model,
    )
    print()
    print(table(record))
    write_report(record, plot_orchestration, args.json, args.plot)


if __name__ == "__main__":
    main()
