"""Prompts of the image models: check them and bring them into the decoder's model space.

Clicks and boxes arrive in pixels of the original image. As `SAM2ImagePredictor` does, points
are scaled to the 1024x1024 model input (x / W * 1024, y / H * 1024, in float32), each box
becomes two corner points labelled 2 and 3 placed before the clicks, and a prompt without a
mask gets an all-zero mask input with `has_mask_input` 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam2_triton.configs import RequestLimits
from sam2_triton.export.contract import IMAGE_SIZE, LOW_RES_MASK_SIZE
from sam2_triton.python_backend.errors import InputError
from sam2_triton.wire import BOX_CORNER_LABELS, IMAGE_POINT_LABELS


@dataclass
class DecoderPrompts:
    """Prompts as the mask_decoder graph takes them (N prompts, P model points each)."""

    point_coords: np.ndarray  # float32 [N, P, 2], model-input pixels
    point_labels: np.ndarray  # int32 [N, P]
    mask_input: np.ndarray  # float32 [N, 1, 256, 256]
    has_mask_input: np.ndarray  # float32 [N]

    @property
    def num_prompts(self) -> int:
        return int(self.point_coords.shape[0])

    def as_decoder_inputs(self) -> dict:
        return {
            "point_coords": self.point_coords,
            "point_labels": self.point_labels,
            "mask_input": self.mask_input,
            "has_mask_input": self.has_mask_input,
        }


def check_finite(name: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")


def check_within_image(name: str, xy: np.ndarray, size: tuple[int, int], margin: float) -> None:
    """`xy` [..., 2] (x, y) must lie within the image grown by `margin` of its size."""
    height, width = size
    low = np.array([-margin * width, -margin * height], dtype=np.float64)
    high = np.array([(1 + margin) * width, (1 + margin) * height], dtype=np.float64)
    outside = np.any((xy < low) | (xy > high), axis=-1)
    if np.any(outside):
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        x, y = (float(v) for v in xy[index])
        raise InputError(
            f"{name}{list(index)} = ({x:g}, {y:g}) lies far outside the {width}x{height} image "
            f"(allowed: x in [{low[0]:g}, {high[0]:g}], y in [{low[1]:g}, {high[1]:g}])"
        )


def _to_model_space(xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixels of the original image -> pixels of the 1024x1024 model input (float32)."""
    height, width = size
    scaled = xy.astype(np.float32, copy=True)
    scaled[..., 0] = scaled[..., 0] / np.float32(width)
    scaled[..., 1] = scaled[..., 1] / np.float32(height)
    return scaled * np.float32(IMAGE_SIZE)


def prepare_prompts(
    original_size: tuple[int, int],
    limits: RequestLimits,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
) -> DecoderPrompts:
    """Validate client prompts (pixels of an image of `original_size` = (H, W)) and convert.

    point_coords [N, P, 2] with point_labels [N, P]; boxes [N, 4] (x0, y0, x1, y1);
    mask_input [N, 1, 256, 256] logits. Raises InputError naming the first problem.
    """
    if (point_coords is None) != (point_labels is None):
        given, missing = (
            ("POINT_COORDS", "POINT_LABELS")
            if point_labels is None
            else ("POINT_LABELS", "POINT_COORDS")
        )
        raise InputError(f"{given} was sent without {missing}: send both")
    if point_coords is None and boxes is None:
        if mask_input is not None:
            raise InputError(
                "MASK_INPUT alone is not a supported prompt: add at least one point or box "
                "(the exported decoder always has SAM 2's padding token, so a mask-only answer "
                "would differ from SAM2ImagePredictor's)"
            )
        raise InputError("no prompt: send POINT_COORDS with POINT_LABELS, and/or BOXES")

    counts = {}
    if point_coords is not None:
        point_coords = np.asarray(point_coords, dtype=np.float32)
        point_labels = np.asarray(point_labels)
        if point_coords.ndim != 3 or point_coords.shape[2] != 2:
            raise InputError(
                f"POINT_COORDS must be [prompts, points, 2], got shape {list(point_coords.shape)}"
            )
        if point_labels.shape != point_coords.shape[:2]:
            raise InputError(
                f"POINT_LABELS must be [prompts, points] = {list(point_coords.shape[:2])} to "
                f"match POINT_COORDS, got shape {list(point_labels.shape)}"
            )
        if point_coords.shape[1] == 0:
            raise InputError("POINT_COORDS has 0 points per prompt")
        check_finite("POINT_COORDS", point_coords)
        bad = ~np.isin(point_labels, IMAGE_POINT_LABELS)
        if np.any(bad):
            raise InputError(
                f"POINT_LABELS holds {int(point_labels[bad][0])}: labels must be one of "
                f"{list(IMAGE_POINT_LABELS)} (-1 padding, 0 background, 1 foreground, 2/3 box "
                "corners)"
            )
        check_within_image("POINT_COORDS", point_coords, original_size, limits.point_margin)
        counts["POINT_COORDS"] = point_coords.shape[0]
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError(
                f"BOXES must be [prompts, 4] (x0, y0, x1, y1), got shape {list(boxes.shape)}"
            )
        check_finite("BOXES", boxes)
        check_within_image("BOXES", boxes.reshape(-1, 2, 2), original_size, limits.point_margin)
        counts["BOXES"] = boxes.shape[0]
    if mask_input is not None:
        mask_input = np.asarray(mask_input, dtype=np.float32)
        expected = (1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE)
        if mask_input.ndim != 4 or mask_input.shape[1:] != expected:
            raise InputError(
                f"MASK_INPUT must be [prompts, 1, {LOW_RES_MASK_SIZE}, {LOW_RES_MASK_SIZE}] "
                f"logits, got shape {list(mask_input.shape)}"
            )
        check_finite("MASK_INPUT", mask_input)
        counts["MASK_INPUT"] = mask_input.shape[0]

    if len(set(counts.values())) > 1:
        described = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise InputError(f"prompt counts differ between inputs ({described}): they must match")
    num_prompts = next(iter(counts.values()))
    if num_prompts < 1:
        raise InputError("the request has 0 prompts")
    if num_prompts > limits.max_prompts:
        raise InputError(
            f"{num_prompts} prompts in one request, more than the configured maximum of "
            f"{limits.max_prompts}"
        )

    coords = [] if boxes is None else [_to_model_space(boxes.reshape(-1, 2, 2), original_size)]
    labels = (
        []
        if boxes is None
        else [np.tile(np.array(BOX_CORNER_LABELS, dtype=np.int32), (num_prompts, 1))]
    )
    if point_coords is not None and point_labels is not None:  # given together (checked above)
        coords.append(_to_model_space(point_coords, original_size))
        labels.append(point_labels.astype(np.int32))
    model_coords = np.concatenate(coords, axis=1)
    model_labels = np.concatenate(labels, axis=1)
    if model_coords.shape[1] > limits.max_points:
        raise InputError(
            f"{model_coords.shape[1]} points per prompt (clicks + 2 per box), more than the "
            f"configured maximum of {limits.max_points}"
        )

    if mask_input is None:
        mask = np.zeros((num_prompts, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE), np.float32)
        has_mask = np.zeros(num_prompts, np.float32)
    else:
        mask, has_mask = mask_input, np.ones(num_prompts, np.float32)
    return DecoderPrompts(model_coords, model_labels, mask, has_mask)
