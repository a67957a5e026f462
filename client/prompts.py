"""Prompts as `SAM2ImagePredictor.predict` takes them -> the batched tensors the server takes.

One prompt: point_coords [P, 2], point_labels [P], box [4], mask_input [1, 256, 256].
N prompts:  point_coords [N, P, 2], point_labels [N, P], box [N, 4], mask_input [N, 1, 256, 256].
Coordinates are pixels of the original image, (x, y). Only what decides single versus batched
(the number of dimensions) and what the server cannot see (labels without points) is checked
here; the server checks everything else and says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from sam2_triton import wire

# name -> (dimensions of one prompt, shape as written in messages)
_SINGLE_RANK = {
    "point_coords": (2, "[P, 2]"),
    "point_labels": (1, "[P]"),
    "box": (1, "[4]"),
    "mask_input": (3, "[1, 256, 256]"),
}


@dataclass(frozen=True)
class Prompts:
    """Prompts with a leading prompt axis N; `batched` is False when the caller gave one prompt."""

    point_coords: np.ndarray | None  # float32 [N, P, 2]
    point_labels: np.ndarray | None  # int32 [N, P]
    boxes: np.ndarray | None  # float32 [N, 4]
    mask_input: np.ndarray | None  # float32 [N, 1, 256, 256]
    batched: bool

    def tensors(self, multimask_output: bool = True) -> dict[str, np.ndarray]:
        """Request tensors: the prompts given, plus MULTIMASK_OUTPUT (BOOL [1])."""
        tensors = {
            wire.POINT_COORDS: self.point_coords,
            wire.POINT_LABELS: self.point_labels,
            wire.BOXES: self.boxes,
            wire.MASK_INPUT: self.mask_input,
        }
        given: dict[str, np.ndarray] = {
            name: array for name, array in tensors.items() if array is not None
        }
        given[wire.MULTIMASK_OUTPUT] = np.array([bool(multimask_output)], dtype=np.bool_)
        return given


def _as_array(name: str, value: ArrayLike | None, dtype) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value, dtype=dtype)
    single_rank, single_shape = _SINGLE_RANK[name]
    if array.ndim not in (single_rank, single_rank + 1):
        raise ValueError(
            f"{name} must have shape {single_shape} (one prompt) or "
            f"[N, {single_shape[1:]} (N prompts), got {list(array.shape)}"
        )
    return array


def normalize_prompts(
    point_coords: ArrayLike | None = None,
    point_labels: ArrayLike | None = None,
    box: ArrayLike | None = None,
    mask_input: ArrayLike | None = None,
) -> Prompts:
    """Prompts in either form -> `Prompts` with the prompt axis added where it was left out.

    The request counts as batched if any prompt given has the prompt axis.
    """
    if point_coords is not None and point_labels is None:
        raise ValueError(
            "point_labels must be given with point_coords (1 foreground, 0 background)"
        )
    if point_labels is not None and point_coords is None:
        raise ValueError("point_labels given without point_coords")
    given = {
        "point_coords": _as_array("point_coords", point_coords, np.float32),
        "point_labels": _as_array("point_labels", point_labels, np.int32),
        "box": _as_array("box", box, np.float32),
        "mask_input": _as_array("mask_input", mask_input, np.float32),
    }
    batched = any(
        array is not None and array.ndim > _SINGLE_RANK[name][0] for name, array in given.items()
    )
    for name, array in given.items():
        if array is not None and array.ndim == _SINGLE_RANK[name][0]:
            given[name] = array[None]
    return Prompts(
        point_coords=given["point_coords"],
        point_labels=given["point_labels"],
        boxes=given["box"],
        mask_input=given["mask_input"],
        batched=batched,
    )
