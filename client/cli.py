"""`sam2-triton-client`: segment an image with clicks or boxes, generate all masks, track objects
through a video, check health.

    sam2-triton-client segment cat.jpg --point 500,375 --point 1125,625,0 --output out/
    sam2-triton-client segment cat.jpg --box 75,275,1725,850 --box 425,600,700,875 --output out/
    sam2-triton-client generate cat.jpg --points-per-side 16 --output out/
    sam2-triton-client track clip.mp4 --box 0:1:40,30,120,110 --point 0:2:200,90 --output out/
    sam2-triton-client track clip.mp4 --box 0:1:40,30,120,110 --answer rle --mask-format rle
    sam2-triton-client health --url localhost:8001 --protocol grpc

Problems (bad arguments, unreachable server, rejected request) are reported as one line,
`sam2-triton-client: error: ...`, with exit status 2.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from sam2_triton import rle, wire
from sam2_triton.client import visualize
from sam2_triton.client.client import Sam2Client
from sam2_triton.client.images import ImageLike, load_rgb
from sam2_triton.client.results import VideoFrameResult
from sam2_triton.client.transport import DEFAULT_TIMEOUT_S, DEFAULT_URLS, PROTOCOLS
from sam2_triton.client.video import DEFAULT_MAX_IN_FLIGHT, FramePrompts
from sam2_triton.client.video_io import FRAME_ENCODINGS, VideoWriter, encode_frame, open_frames
from sam2_triton.errors import Sam2TritonError

PROG = "sam2-triton-client"
OVERLAY_FILE = "overlay.png"
JSON_FILE = "masks.json"
MASK_DIR = "masks"
OUTPUT_HELP = f"folder for {OVERLAY_FILE}, {JSON_FILE} (COCO RLE) and {MASK_DIR}/*.png"
VIDEO_OVERLAY_FILE = "overlay.mp4"
MASK_FORMATS = ("png", "rle")
DEFAULT_TRACK_OUTPUT = "track_output"


class UsageError(Exception):
    """A command line that cannot be run; the message says why."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line by raising UsageError (main prints one line)."""

    def error(self, message: str):
        raise UsageError(message)


def parse_point(text: str) -> tuple[float, float, int]:
    """Parse `X,Y` or `X,Y,LABEL` (pixels; label 1 foreground, the default, or 0 background)."""
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else wire.FOREGROUND_LABEL
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y or X,Y,LABEL") from None
    if label not in wire.CLICK_LABELS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: label must be 1 (foreground) or 0 (background)"
        )
    return x, y, label


def parse_positive(kind):
    """An argparse type: `kind` (int or float) > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def parse_bool(text: str) -> bool:
    """'true' / 'false' (also 1 / 0, yes / no)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_size(text: str) -> tuple[int, int]:
    """Parse `HxW` (pixels, whole numbers >= 1) -> (h, w)."""
    parts = text.lower().split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        height, width = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW (e.g. 256x256)") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be >= 1")
    return height, width


def parse_box(text: str) -> tuple[float, float, float, float]:
    """Parse `X0,Y0,X1,Y1` (pixels)."""
    parts = text.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X0,Y0,X1,Y1") from None
    return x0, y0, x1, y1


def _frame_and_object(text: str, head: Sequence[str], form: str) -> tuple[int, int]:
    try:
        frame, obj_id = int(head[0]), int(head[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {form}") from None
    if frame < 0 or obj_id < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: frame and object id must be >= 0")
    return frame, obj_id


def parse_frame_point(text: str) -> tuple[int, int, float, float, int]:
    """Parse `FRAME:OBJ:X,Y` or `FRAME:OBJ:X,Y:LABEL` -> (frame, obj_id, x, y, label)."""
    form = "FRAME:OBJ:X,Y or FRAME:OBJ:X,Y:LABEL"
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"{text!r} is not {form}")
    frame, obj_id = _frame_and_object(text, parts, form)
    try:
        x, y, label = parse_point(",".join(parts[2:]))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {form} (label 1 foreground, 0 background)"
        ) from None
    return frame, obj_id, x, y, label


def parse_frame_box(text: str) -> tuple[int, int, tuple[float, float, float, float]]:
    """Parse `FRAME:OBJ:X0,Y0,X1,Y1` -> (frame, obj_id, (x0, y0, x1, y1))."""
    form = "FRAME:OBJ:X0,Y0,X1,Y1"
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not {form}")
    frame, obj_id = _frame_and_object(text, parts, form)
    try:
        box = parse_box(parts[2])
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {form}") from None
    return frame, obj_id, box


def video_prompts_from_args(
    points: Sequence[tuple[int, int, float, float, int]] | None,
    boxes: Sequence[tuple[int, int, tuple[float, float, float, float]]] | None,
) -> dict[int, FramePrompts]:
    """Prompts per frame for `VideoSession.track_frames`: the clicks of one object on one frame
    make one point prompt; one box per object and frame."""
    points, boxes = list(points or []), list(boxes or [])
    if not points and not boxes:
        raise UsageError("give at least one --point or --box")
    clicks: dict[int, dict[int, tuple[list, list]]] = collections.defaultdict(dict)
    for frame, obj_id, x, y, label in points:
        coords, labels = clicks[frame].setdefault(obj_id, ([], []))
        coords.append([x, y])
        labels.append(label)
    frame_boxes: dict[int, dict[int, tuple[float, ...]]] = collections.defaultdict(dict)
    for frame, obj_id, box in boxes:
        if obj_id in frame_boxes[frame]:
            raise UsageError(
                f"two --box for object {obj_id} on frame {frame}: one box per object and frame"
            )
        frame_boxes[frame][obj_id] = box
    return {
        frame: FramePrompts(points=clicks.get(frame) or None, boxes=frame_boxes.get(frame) or None)
        for frame in sorted(set(clicks) | set(frame_boxes))
    }


def prompts_from_args(
    points: Sequence[tuple[float, float, int]] | None,
    boxes: Sequence[tuple[float, float, float, float]] | None,
) -> dict[str, np.ndarray]:
    """Keyword prompts for `Sam2Client.segment`: clicks and at most one box make one prompt;
    several boxes make one prompt each (then clicks are not allowed)."""
    points, boxes = list(points or []), list(boxes or [])
    if not points and not boxes:
        raise UsageError("give at least one --point or --box")
    if len(boxes) > 1 and points:
        raise UsageError(
            "--point cannot be combined with several --box (each box is its own object): "
            "give one --box with its clicks, or boxes only"
        )
    prompts: dict[str, np.ndarray] = {}
    if points:
        prompts["point_coords"] = np.array([p[:2] for p in points], dtype=np.float32)
        prompts["point_labels"] = np.array([p[2] for p in points], dtype=np.int32)
    if len(boxes) == 1:
        prompts["box"] = np.array(boxes[0], dtype=np.float32)
    elif boxes:
        prompts["box"] = np.array(boxes, dtype=np.float32)
    return prompts


def _client(args) -> Sam2Client:
    url = args.url or DEFAULT_URLS[args.protocol]
    return Sam2Client(url, args.protocol, model_prefix=args.model_prefix, timeout_s=args.timeout)


def _output_dirs(output: str) -> tuple[Path, Path]:
    root = Path(output)
    (root / MASK_DIR).mkdir(parents=True, exist_ok=True)
    return root, root / MASK_DIR


def cmd_segment(args) -> int:
    prompts = prompts_from_args(args.point, args.box)
    image = load_rgb(args.image)
    with _client(args) as client:
        result = client.segment(args.image, multimask_output=not args.single_mask, **prompts)
    masks = result.masks if result.batched else result.masks[None]
    scores = result.scores if result.batched else result.scores[None]
    root, mask_dir = _output_dirs(args.output)
    records, shown = [], []
    for prompt, (prompt_masks, prompt_scores) in enumerate(zip(masks, scores)):
        chosen = range(len(prompt_scores)) if args.all_masks else [int(np.argmax(prompt_scores))]
        for k in chosen:
            path = visualize.write_mask_png(mask_dir / f"mask_{prompt}_{k}.png", prompt_masks[k])
            records.append(
                visualize.mask_record(
                    rle.encode(prompt_masks[k]),
                    prompt_scores[k],
                    prompt=prompt,
                    mask_index=k,
                    file=str(path.relative_to(root)),
                )
            )
            shown.append(prompt_masks[k])
    visualize.write_overlay(
        root / OVERLAY_FILE,
        image,
        shown,
        points=prompts.get("point_coords"),
        labels=prompts.get("point_labels"),
        boxes=prompts.get("box"),
    )
    visualize.write_coco_json(root / JSON_FILE, records)
    print(
        f"{len(records)} mask(s) for {len(masks)} prompt(s): {root / OVERLAY_FILE}, "
        f"{root / JSON_FILE}, {mask_dir}/"
    )
    return 0


def cmd_generate(args) -> int:
    settings = {key: getattr(args, key) for key in wire.GENERATOR_SETTINGS}
    image = load_rgb(args.image)
    with _client(args) as client:
        generated = client.generate_masks(args.image, **settings)
    root, mask_dir = _output_dirs(args.output)
    records = []
    for i, mask in enumerate(generated):
        path = visualize.write_mask_png(mask_dir / f"mask_{i}.png", mask.segmentation)
        records.append(
            visualize.mask_record(
                mask.rle,
                mask.predicted_iou,
                bbox=mask.bbox,
                area=mask.area,
                predicted_iou=mask.predicted_iou,
                stability_score=mask.stability_score,
                point_coords=mask.point_coords,
                crop_box=mask.crop_box,
                file=str(path.relative_to(root)),
            )
        )
    largest_first = sorted(generated, key=lambda m: m.area, reverse=True)  # small ones stay visible
    visualize.write_overlay(root / OVERLAY_FILE, image, [m.segmentation for m in largest_first])
    visualize.write_coco_json(root / JSON_FILE, records)
    print(f"{len(records)} mask(s): {root / OVERLAY_FILE}, {root / JSON_FILE}, {mask_dir}/")
    return 0


class _Markers(NamedTuple):
    """Overlay markers of a frame's prompts: clicks [P, 2] with labels [P], boxes [B, 4]."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None


def _markers(prompts: FramePrompts | None) -> _Markers:
    """Overlay markers (clicks, boxes) of a frame's prompts."""
    if prompts is None:
        return _Markers()
    points = labels = boxes = None
    if prompts.points:
        clicks = list(prompts.points.values())
        points = np.concatenate([np.asarray(xy, np.float32).reshape(-1, 2) for xy, _ in clicks])
        labels = np.concatenate([np.asarray(codes).reshape(-1) for _, codes in clicks])
    if prompts.boxes:
        boxes = np.array(list(prompts.boxes.values()), dtype=np.float32)
    return _Markers(points, labels, boxes)


def _track_records(result: VideoFrameResult) -> list[dict]:
    """COCO result records of a frame's masks, one per object (the server's RLE as it came for
    answer "rle"; otherwise `result.masks` encoded, at their size)."""
    encoded = result.rle if result.rle is not None else rle.encode_masks(result.masks)
    return [
        visualize.mask_record(
            mask_rle,
            result.scores[row],
            frame=result.frame_index,
            obj_id=int(result.obj_ids[row]),
            present=bool(result.present[row]),
            object_score_logit=float(result.object_score_logits[row]),
            mask_box=[float(v) for v in result.boxes[row]],
        )
        for row, mask_rle in enumerate(encoded)
    ]


def cmd_track(args) -> int:
    prompts = video_prompts_from_args(args.point, args.box)
    settings = {key: getattr(args, key) for key in wire.SAMURAI_SETTINGS}
    if any(value is not None for value in settings.values()) and not args.samurai:
        raise UsageError("SAMURAI settings (--kf-score-weight, ...) need --samurai")
    sized = args.answer in wire.SIZED_ANSWERS
    if sized != (args.answer_size is not None):
        raise UsageError(
            f"--answer {args.answer} needs --answer-size HxW"
            if sized
            else f"--answer-size is only used with --answer {' or '.join(wire.SIZED_ANSWERS)}"
        )
    if args.fallback_url and args.snapshot_every is None:
        raise UsageError("--fallback-url needs --snapshot-every K (how often to take a snapshot)")
    failover = {}  # snapshots every K frames, the servers to resume on
    if args.snapshot_every is not None:
        failover = {"snapshot_every": args.snapshot_every, "fallback_urls": args.fallback_url}
    source = open_frames(args.source)
    beyond = sorted(frame for frame in prompts if frame >= source.num_frames)
    if beyond:
        raise UsageError(
            f"prompts on frame(s) {beyond}, but {source.path} has {source.num_frames} frames "
            f"(0-{source.num_frames - 1})"
        )
    root = Path(args.output)
    mask_dir = root / MASK_DIR
    (mask_dir if args.mask_format == "png" else root).mkdir(parents=True, exist_ok=True)

    shown: collections.deque[np.ndarray] = collections.deque()  # frames sent, not yet answered

    def frames_to_send() -> Iterator[ImageLike]:
        for pixels in source.frames():
            shown.append(pixels)
            yield encode_frame(pixels, args.frame_encoding)

    records: list[dict] = []
    tracked = 0
    with (
        _client(args) as client,
        client.video_session(
            num_frames=source.num_frames if args.num_frames_known else None,
            samurai=args.samurai,
            samurai_settings=settings if args.samurai else None,
            answer=args.answer,
            answer_size=args.answer_size,
            **failover,
        ) as video,
        VideoWriter(root / VIDEO_OVERLAY_FILE, args.fps or source.fps) as writer,
    ):
        results = video.track_frames(frames_to_send(), prompts, max_in_flight=args.max_in_flight)
        for result in tqdm(
            results, total=source.num_frames, unit="frame", desc="tracking", disable=None
        ):
            pixels = shown.popleft()
            markers = _markers(prompts.get(result.frame_index))
            picture = visualize.overlay(
                pixels,
                result.frame_masks(),
                points=markers.points,
                labels=markers.labels,
                boxes=markers.boxes,
                colors=visualize.object_colors(result.obj_ids),
            )
            writer.write(np.asarray(picture))
            if args.mask_format == "png":
                for obj_id, mask in zip(result.obj_ids, result.masks):
                    visualize.write_mask_png(
                        mask_dir / f"{result.frame_index:05d}_obj{int(obj_id)}.png", mask
                    )
            else:
                records.extend(_track_records(result))
            tracked += 1
    written = [str(root / VIDEO_OVERLAY_FILE)]
    if args.mask_format == "rle":
        visualize.write_coco_json(root / JSON_FILE, records)
        written.append(str(root / JSON_FILE))
    else:
        written.append(f"{mask_dir}/")
    print(f"{tracked} frame(s) tracked: {', '.join(written)}")
    return 0


def cmd_health(args) -> int:
    """Exit status 0 when the server and every client-facing model are ready, else 1."""
    with _client(args) as client:
        ready = client.is_ready()
        print(f"server at {client.url} ({client.protocol}): {'ready' if ready else 'not ready'}")
        if ready:
            for name, model_ready in client.models_ready().items():
                print(f"  {name}: {'ready' if model_ready else 'not ready'}")
                ready = ready and model_ready
    return 0 if ready else 1


def add_setting_options(group, table) -> None:
    """One --option per setting of `table` (name -> (input, dtype)): true|false for bools,
    integers or floats otherwise; left out means the server's default."""
    for key, (_, dtype) in table.items():
        option = "--" + key.replace("_", "-")
        if dtype is np.bool_:
            group.add_argument(option, dest=key, type=parse_bool, metavar="true|false")
            continue
        whole = np.issubdtype(dtype, np.integer)
        group.add_argument(
            option, dest=key, type=int if whole else float, metavar="N" if whole else "F"
        )


def build_parser() -> argparse.ArgumentParser:
    server = _Parser(add_help=False)
    group = server.add_argument_group("server")
    group.add_argument(
        "--url", help="host:port (default localhost:8000 for http, localhost:8001 for grpc)"
    )
    group.add_argument("--protocol", choices=PROTOCOLS, default="http")
    group.add_argument("--model-prefix", default="", help="prefix of the served model names")
    group.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per call")

    parser = _Parser(
        prog=PROG,
        description="SAM 2 on Triton: segment an image with clicks or "
        "boxes, generate all of its masks, track objects through a video, check the server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment = commands.add_parser("segment", parents=[server], help="masks for clicks and boxes")
    segment.add_argument("image", help="JPEG / PNG / BMP / WebP file")
    segment.add_argument(
        "--point",
        action="append",
        type=parse_point,
        metavar="X,Y[,LABEL]",
        help="click in pixels, label 1 foreground (default) or 0 background; repeatable",
    )
    segment.add_argument(
        "--box",
        action="append",
        type=parse_box,
        metavar="X0,Y0,X1,Y1",
        help="box in pixels; repeatable, one object per box",
    )
    segment.add_argument(
        "--single-mask", action="store_true", help="one mask per prompt, not three"
    )
    segment.add_argument(
        "--all-masks",
        action="store_true",
        help="write every mask, not only the best-scoring one per prompt",
    )
    segment.add_argument("--output", required=True, metavar="DIR", help=OUTPUT_HELP)
    segment.set_defaults(run=cmd_segment)

    generate = commands.add_parser(
        "generate", parents=[server], help="masks of everything in an image"
    )
    generate.add_argument("image", help="JPEG / PNG / BMP / WebP file")
    generate.add_argument("--output", required=True, metavar="DIR", help=OUTPUT_HELP)
    add_setting_options(
        generate.add_argument_group("mask generator settings (server defaults if left out)"),
        wire.GENERATOR_SETTINGS,
    )
    generate.set_defaults(run=cmd_generate)

    track = commands.add_parser(
        "track", parents=[server], help="follow objects through a video (track_video)"
    )
    track.add_argument(
        "source",
        help="video file (MP4, AVI, WebM, ...) or folder of frames "
        "(JPEG / PNG / BMP / WebP, in name order, digit runs as numbers)",
    )
    track.add_argument(
        "--point",
        action="append",
        type=parse_frame_point,
        metavar="FRAME:OBJ:X,Y[:LABEL]",
        help="click on object OBJ (an integer id >= 0) on frame FRAME (0 = first), pixels; "
        "label 1 foreground (default) or 0 background; repeatable",
    )
    track.add_argument(
        "--box",
        action="append",
        type=parse_frame_box,
        metavar="FRAME:OBJ:X0,Y0,X1,Y1",
        help="box around object OBJ on frame FRAME, pixels; repeatable",
    )
    track.add_argument(
        "--samurai",
        action="store_true",
        help="SAMURAI motion-aware tracking (Kalman filter on each object's box)",
    )
    track.add_argument(
        "--num-frames-known",
        action="store_true",
        help="tell the server the video's frame count (NUM_FRAMES): object-pointer positions "
        "as SAM2VideoPredictor computes them for a whole video, rather than as for a stream",
    )
    track.add_argument(
        "--output",
        default=DEFAULT_TRACK_OUTPUT,
        metavar="DIR",
        help=f"folder for {VIDEO_OVERLAY_FILE} and the masks (default {DEFAULT_TRACK_OUTPUT})",
    )
    track.add_argument(
        "--mask-format",
        choices=MASK_FORMATS,
        default="png",
        help=f"png: {MASK_DIR}/<frame:05d>_obj<id>.png per frame and object; rle: one "
        f"{JSON_FILE} of COCO RLE records with scores, boxes, presence (default png)",
    )
    track.add_argument(
        "--answer",
        choices=wire.ANSWER_KINDS,
        default=wire.ANSWER_MASKS,
        help="what the server sends per frame: masks (full size, default), rle (COCO RLE of "
        "them, encoded by the server: far fewer bytes), small_masks or logits (float32, "
        "thresholded at 0 here) at --answer-size; the mask files hold the masks at the size "
        "they came in, the overlay draws them at the frame's size",
    )
    track.add_argument(
        "--answer-size",
        type=parse_size,
        metavar="HxW",
        help="size of small_masks / logits answers, e.g. 256x256 (the decoder's own)",
    )
    track.add_argument(
        "--frame-encoding",
        choices=FRAME_ENCODINGS,
        default="raw",
        help="how frames travel: raw pixels (default; fastest on localhost) or PNG / JPEG bytes "
        "(smaller, for remote servers; JPEG is lossy)",
    )
    track.add_argument(
        "--fps",
        type=parse_positive(float),
        help="frame rate of the overlay video (default: the source's; 10 for a folder)",
    )
    track.add_argument(
        "--max-in-flight",
        type=parse_positive(int),
        default=DEFAULT_MAX_IN_FLIGHT,
        metavar="N",
        help=f"frames on their way at once over gRPC (default {DEFAULT_MAX_IN_FLIGHT})",
    )
    track.add_argument(
        "--snapshot-every",
        type=parse_positive(int),
        metavar="K",
        help="take a snapshot of the video's state every K frames and keep the frames since "
        "(sends one frame at a time); with --fallback-url, a lost server's video resumes on "
        "the next fallback server",
    )
    track.add_argument(
        "--fallback-url",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a server to resume the video on when the current one is lost (same protocol; "
        "repeat for more, tried in order; needs --snapshot-every)",
    )
    add_setting_options(
        track.add_argument_group("SAMURAI settings (with --samurai; server defaults if left out)"),
        wire.SAMURAI_SETTINGS,
    )
    track.set_defaults(run=cmd_track)

    health = commands.add_parser(
        "health", parents=[server], help="is the server (and each model) ready"
    )
    health.set_defaults(run=cmd_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (UsageError, Sam2TritonError, ValueError, OSError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
