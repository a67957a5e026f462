"""`sam2-triton-client`: segment an image with clicks or boxes, generate all masks, check health.

    sam2-triton-client segment cat.jpg --point 500,375 --point 1125,625,0 --output out/
    sam2-triton-client segment cat.jpg --box 75,275,1725,850 --box 425,600,700,875 --output out/
    sam2-triton-client generate cat.jpg --points-per-side 16 --output out/
    sam2-triton-client health --url localhost:8001 --protocol grpc

Problems (bad arguments, unreachable server, rejected request) are reported as one line,
`sam2-triton-client: error: ...`, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sam2_triton import rle
from sam2_triton.client import contract, visualize
from sam2_triton.client.client import Sam2Client
from sam2_triton.client.images import load_rgb
from sam2_triton.client.transport import DEFAULT_TIMEOUT_S, DEFAULT_URLS, PROTOCOLS
from sam2_triton.errors import Sam2TritonError

PROG = "sam2-triton-client"
OVERLAY_FILE = "overlay.png"
JSON_FILE = "masks.json"
MASK_DIR = "masks"
CLICK_LABELS = (0, 1)  # background, foreground
OUTPUT_HELP = f"folder for {OVERLAY_FILE}, {JSON_FILE} (COCO RLE) and {MASK_DIR}/*.png"


class UsageError(Exception):
    """A command line that cannot be run; the message says why."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line by raising UsageError (main prints one line)."""

    def error(self, message: str):
        raise UsageError(message)


def parse_point(text: str) -> Tuple[float, float, int]:
    """Parse `X,Y` or `X,Y,LABEL` (pixels; label 1 foreground, the default, or 0 background)."""
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y or X,Y,LABEL") from None
    if label not in CLICK_LABELS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: label must be 1 (foreground) or 0 (background)"
        )
    return x, y, label


def parse_bool(text: str) -> bool:
    """'true' / 'false' (also 1 / 0, yes / no)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_box(text: str) -> Tuple[float, float, float, float]:
    """Parse `X0,Y0,X1,Y1` (pixels)."""
    parts = text.split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X0,Y0,X1,Y1") from None
    return x0, y0, x1, y1


def prompts_from_args(
    points: Optional[Sequence[Tuple[float, float, int]]],
    boxes: Optional[Sequence[Tuple[float, float, float, float]]],
) -> Dict[str, np.ndarray]:
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
    prompts: Dict[str, np.ndarray] = {}
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


def _output_dirs(output: str) -> Tuple[Path, Path]:
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
    settings = {key: getattr(args, key) for key in contract.GENERATOR_SETTINGS}
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
        "boxes, generate all of its masks, check the server.",
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
    settings = generate.add_argument_group("mask generator settings (server defaults if left out)")
    for key, (_, dtype) in contract.GENERATOR_SETTINGS.items():
        if dtype is np.bool_:
            settings.add_argument("--" + key.replace("_", "-"), dest=key, type=parse_bool,
                                  metavar="true|false")
            continue
        whole = np.issubdtype(dtype, np.integer)
        settings.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            type=int if whole else float,
            metavar="N" if whole else "F",
        )
    generate.set_defaults(run=cmd_generate)

    health = commands.add_parser(
        "health", parents=[server], help="is the server (and each model) ready"
    )
    health.set_defaults(run=cmd_health)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (UsageError, Sam2TritonError, ValueError, OSError, ImportError) as error:
        message = " ".join(str(error).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
