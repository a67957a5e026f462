"""Files a user can look at or feed to COCO tools: overlay PNG, mask PNGs, COCO RLE JSON.

Masks are boolean [H, W] at the original image size; points and boxes are pixels (x, y).
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, ImageDraw

from sam2_triton import rle

MASK_ALPHA = 0.5  # weight of a mask's color over the image
FOREGROUND_COLOR = (0, 230, 0)  # clicks with label 1
BACKGROUND_COLOR = (230, 0, 0)  # clicks with label 0
BOX_COLOR = (0, 255, 0)
MARKER_EDGE_COLOR = (255, 255, 255)
_GOLDEN_RATIO = 0.618033988749895  # hue step that keeps consecutive colors far apart


def _colors(indices: Iterable[int]) -> np.ndarray:
    colors = []
    for i in indices:
        hue = (i * _GOLDEN_RATIO) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
        colors.append((round(red * 255), round(green * 255), round(blue * 255)))
    return np.array(colors, dtype=np.uint8).reshape(len(colors), 3)


def palette(count: int) -> np.ndarray:
    """`count` distinct saturated colors, uint8 [count, 3] RGB."""
    return _colors(range(count))


def object_colors(obj_ids: ArrayLike) -> np.ndarray:
    """A color per object id, uint8 [N, 3] RGB: color `obj_id` of the palette, so an object
    keeps its color on every frame."""
    return _colors(int(i) for i in np.asarray(obj_ids, dtype=np.int64).reshape(-1))


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour outside it (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def overlay(
    image: np.ndarray,
    masks: Iterable[np.ndarray],
    points: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    boxes: ArrayLike | None = None,
    alpha: float = MASK_ALPHA,
    colors: ArrayLike | None = None,
) -> Image.Image:
    """`image` (uint8 [H, W, 3] RGB) with each mask blended in its own color and outlined.

    Optional markers: points [P, 2] with labels [P] (1 green, 0 red, -1 not drawn), boxes
    [B, 4] (x0, y0, x1, y1). `colors`: uint8 [N, 3] RGB, one per mask (default `palette`).
    """
    masks = [np.asarray(m, dtype=bool) for m in masks]
    canvas = np.asarray(image, dtype=np.float32).copy()
    colors = palette(len(masks)) if colors is None else np.asarray(colors).reshape(-1, 3)
    if len(colors) != len(masks):
        raise ValueError(f"{len(colors)} colors for {len(masks)} masks")
    for mask, color in zip(masks, colors.astype(np.float32)):
        if mask.shape != canvas.shape[:2]:
            raise ValueError(
                f"mask of shape {list(mask.shape)} for an image of {list(canvas.shape[:2])}"
            )
        canvas[mask] = canvas[mask] * (1.0 - alpha) + color * alpha
        canvas[_outline(mask)] = color
    picture = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(picture)
    scale = max(1, round(min(picture.size) / 400))  # markers grow with the image
    if boxes is not None:
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float32).reshape(-1, 4):
            draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOR, width=2 * scale)
    if points is not None:
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        labels = (
            np.ones(len(points), np.int32) if labels is None else np.asarray(labels).reshape(-1)
        )
        radius = 5 * scale
        for (x, y), label in zip(points, labels):
            if label not in (0, 1):
                continue
            fill = FOREGROUND_COLOR if label == 1 else BACKGROUND_COLOR
            draw.ellipse(
                [x - radius, y - radius, x + radius, y + radius],
                fill=fill,
                outline=MARKER_EDGE_COLOR,
                width=scale,
            )
    return picture


def write_overlay(
    path: str | Path, image: np.ndarray, masks: Iterable[np.ndarray], **markers: Any
) -> Path:
    """Write `overlay(image, masks, **markers)` as PNG at `path`."""
    path = Path(path)
    overlay(image, masks, **markers).save(path, format="PNG")
    return path


def write_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """Write a boolean mask [H, W] as a single-channel PNG: 255 foreground, 0 background."""
    path = Path(path)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be [H, W], got shape {list(mask.shape)}")
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path, format="PNG")
    return path


def mask_record(mask_rle: rle.Rle, score: float, **extra: Any) -> dict[str, Any]:
    """A COCO result record: segmentation (RLE), bbox (x, y, w, h), area, score, then `extra`."""
    return {
        "segmentation": mask_rle,
        "bbox": rle.bbox(mask_rle),
        "area": rle.area(mask_rle),
        "score": float(score),
        **extra,
    }


def write_coco_json(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write `records` (see `mask_record`) as a JSON list, one record per line."""
    path = Path(path)
    lines = ",\n".join(json.dumps(record) for record in records)
    path.write_text(f"[\n{lines}\n]\n" if lines else "[]\n")
    return path


def read_coco_json(path: str | Path) -> list[dict[str, Any]]:
    """Records written by `write_coco_json`, with each segmentation decoded to bool [H, W]
    under the key "mask"."""
    records = json.loads(Path(path).read_text())
    return [{**record, "mask": rle.decode(record["segmentation"])} for record in records]
