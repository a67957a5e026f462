"""What a `track_video` sequence gets back on each frame: its answer format, chosen at START, and
the response tensors built from a `FrameResult` in that format.

Kinds (sam2_triton/wire.py `ANSWER_KINDS`; tensors: model_repository/README.md):

- "masks" (default): MASKS bool [N, H, W] at the frame's size;
- "rle": RLE_COUNTS, the COCO compressed RLE of those same masks, encoded here (pycocotools);
- "small_masks": MASKS bool [N, h, w] at ANSWER_SIZE: the decoder's 256x256 logits resized to
  (h, w) (bilinear, align_corners=False, as the full-size masks), > 0;
- "logits": MASK_LOGITS float32 [N, h, w]: the same resized logits, before thresholding (at
  256x256, the decoder's own resolution, they are not resized at all).

Boxes (MASK_BOXES, inclusive frame pixels), scores and presence come with every kind. "masks"
and "rle" upscale to the frame's size on the tracker's device (`FrameResult.masks`); the sized
kinds never do: their masks are resized on the device straight to (h, w), and their boxes are
the frame pixels the answer's foreground pixels cover (`frame_boxes`). They reach at most one
answer pixel (W / w frame pixels, rounded up) beyond the full-size masks' bounds, and lie
within that of them for masks without parts thinner than an answer pixel (at a coarse
ANSWER_SIZE such parts vanish from the answer, and from its box). Each output tensor reaches
the host in one transfer (`HostTransfers.to_host`), whatever the number of objects.

Design notes: docs/serving.md (track_video answers)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sam2_triton import rle
from sam2_triton.python_backend.boxes import mask_bounds
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.masks import (
    MASK_BUDGET_SETTING,
    MASK_THRESHOLD,
    UPSCALE_CHUNK_PIXELS,
    check_mask_budget,
)
from sam2_triton.python_backend.video.tracker import FrameResult
from sam2_triton.wire import (
    ANSWER,
    ANSWER_KINDS,
    ANSWER_LOGITS,
    ANSWER_MASKS,
    ANSWER_OUTPUTS,
    ANSWER_RLE,
    ANSWER_SIZE,
    ANSWER_SMALL_MASKS,
    FRAME_SIZE,
    MASK_BOXES,
    MAX_ANSWER_SIDE,
    OBJ_IDS,
    OBJECT_LOGITS,
    OBJECT_MASKS,
    OBJECT_RLE_COUNTS,
    OBJECT_SCORE_LOGITS,
    OBJECT_SCORES,
    PRESENT,
    SIZED_ANSWERS,
    STATE_BYTES,
    TRACKED_FRAME,
)

# Bytes per pixel of each kind's mask output (RLE: the full-size masks it is encoded from).
PIXEL_BYTES = {ANSWER_MASKS: 1, ANSWER_RLE: 1, ANSWER_SMALL_MASKS: 1, ANSWER_LOGITS: 4}
# Each mask output with no rows: what an answer holds of the outputs its kind does not use.
UNUSED_OUTPUTS = {
    OBJECT_MASKS: np.zeros((0, 0, 0), bool),
    OBJECT_RLE_COUNTS: np.zeros((0,), np.object_),
    OBJECT_LOGITS: np.zeros((0, 0, 0), np.float32),
}


@dataclass(frozen=True)
class AnswerFormat:
    """What each answer of a sequence holds: `kind` (one of wire.ANSWER_KINDS) and, for the sized
    kinds ("small_masks", "logits"), `size` (h, w), each side in 1..MAX_ANSWER_SIDE (it may
    exceed the frame's: logits at the decoder's 256x256 on a small video). InputError otherwise."""

    kind: str = ANSWER_MASKS
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_KINDS:
            raise InputError(
                f"{ANSWER} is {self.kind!r}: the answer kinds are {', '.join(ANSWER_KINDS)}"
            )
        if self.kind not in SIZED_ANSWERS:
            if self.size is not None:
                raise InputError(
                    f"{ANSWER_SIZE} is only used with {ANSWER} {' or '.join(SIZED_ANSWERS)}; "
                    f"this sequence asks for {self.kind!r} (masks at the frame's size)"
                )
            return
        if self.size is None:
            raise InputError(f"{ANSWER} {self.kind!r} needs {ANSWER_SIZE} (h, w)")
        if len(self.size) != 2 or not all(1 <= side <= MAX_ANSWER_SIDE for side in self.size):
            raise InputError(
                f"{ANSWER_SIZE} is {list(self.size)}: need (h, w), each side in "
                f"1..{MAX_ANSWER_SIDE}"
            )

    @classmethod
    def from_tensors(cls, kind: np.ndarray | None, size: np.ndarray | None) -> AnswerFormat:
        """From the START request's ANSWER (BYTES [1]) and ANSWER_SIZE (INT64 [2]) tensors,
        either absent (None); InputError naming the problem."""
        name = ANSWER_MASKS if kind is None else _answer_kind(kind)
        if size is None:
            return cls(name)
        sides = np.asarray(size)
        if sides.shape != (2,) or not np.issubdtype(sides.dtype, np.integer):
            raise InputError(
                f"{ANSWER_SIZE} must be 2 integers (h, w), got {sides.dtype} {list(sides.shape)}"
            )
        return cls(name, (int(sides[0]), int(sides[1])))

    @property
    def full_size(self) -> bool:
        """The answer is made from the masks at the frame's size ("masks", "rle")."""
        return self.kind not in SIZED_ANSWERS

    def output_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the answer's masks or logits for frames of `frame_size` (H, W)."""
        return frame_size if self.size is None else self.size

    def answer_bytes(self, frame_size: tuple[int, int], num_objects: int) -> int:
        """Bytes of the answer's masks (or logits; for "rle": of the masks it encodes)."""
        height, width = self.output_size(frame_size)
        return int(num_objects) * int(height) * int(width) * PIXEL_BYTES[self.kind]

    def check_budget(
        self, frame_size: tuple[int, int], num_objects: int, max_mask_bytes: int
    ) -> None:
        """InputError when the answer for `num_objects` objects on frames of `frame_size` (H, W)
        would exceed `max_mask_bytes` (limits.max_mask_bytes): the full-size masks for "masks"
        and "rle" (python_backend/masks.py `check_mask_budget`), the answer-size output for the
        sized kinds."""
        if self.full_size:
            check_mask_budget((num_objects, *frame_size), max_mask_bytes, unit="objects")
            return
        total = self.answer_bytes(frame_size, num_objects)
        if total > max_mask_bytes:
            height, width = self.output_size(frame_size)
            per_pixel = PIXEL_BYTES[self.kind]
            unit = "bytes" if per_pixel > 1 else "byte"
            raise InputError(
                f"the answer would hold {num_objects} objects of {self.kind} at {width}x{height} "
                f"pixels x {per_pixel} {unit} = {total} bytes, more than the limit of "
                f"{max_mask_bytes} per request ({MASK_BUDGET_SETTING}): track fewer objects or "
                f"START with a smaller {ANSWER_SIZE}"
            )


def _answer_kind(tensor: np.ndarray) -> str:
    values = np.asarray(tensor).reshape(-1)
    if values.shape != (1,):
        raise InputError(f"{ANSWER} must hold one string, got {values.shape[0]} elements")
    value = values[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{ANSWER} is not UTF-8 text: {value[:32]!r}") from None
    if isinstance(value, str):
        return value
    raise InputError(f"{ANSWER} must be a string (BYTES), got {type(value).__name__} {value!r}")


def frame_boxes(masks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes float32 [N, 4] (x0, y0, x1, y1), inclusive frame pixels, of masks bool [N, h, w]
    at another size than the frame's (H, W): the frame pixels the masks' foreground pixels
    cover (answer pixel j spans frame columns j * W / w up to (j + 1) * W / w); zeros for an
    empty mask. At the frame's size, exactly `mask_bounds`."""
    bounds, present = mask_bounds(masks)
    height, width = masks.shape[1:]
    frame_height, frame_width = (int(s) for s in frame_size)
    scale = np.array([frame_width, frame_height, frame_width, frame_height], np.int64)
    sides = np.array([width, height, width, height], np.int64)
    first = bounds * scale // sides  # the frame pixel holding the first answer pixel's start
    last = -(-(bounds + 1) * scale // sides) - 1  # ... the last answer pixel's end
    boxes = np.concatenate([first[:, :2], last[:, 2:]], axis=1)
    return (boxes * present[:, None]).astype(np.float32)


def answer_tensors(
    result: FrameResult | None,
    answer: AnswerFormat,
    state_bytes: int,
    frame_size: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """The response tensors (sam2_triton/wire.py, track_video outputs), rows by ascending object
    id, every output present: the mask outputs `answer`'s kind does not use have no rows.
    `frame_size` (H, W) is used only when nothing was tracked (`result` None): then every
    output has no rows and TRACKED_FRAME is -1."""
    used = ANSWER_OUTPUTS[answer.kind]
    tensors = {name: array for name, array in UNUSED_OUTPUTS.items() if name != used}
    if result is None:
        size = frame_size or (0, 0)
        height, width = answer.output_size(size)
        empty = {
            OBJECT_MASKS: np.zeros((0, height, width), bool),
            OBJECT_RLE_COUNTS: np.zeros((0,), np.object_),
            OBJECT_LOGITS: np.zeros((0, height, width), np.float32),
        }
        tensors.update(
            {
                used: empty[used],
                OBJ_IDS: np.zeros((0,), np.int64),
                OBJECT_SCORES: np.zeros((0,), np.float32),
                OBJECT_SCORE_LOGITS: np.zeros((0,), np.float32),
                PRESENT: np.zeros((0,), bool),
                MASK_BOXES: np.zeros((0, 4), np.float32),
                FRAME_SIZE: np.array(size, np.int32),
                TRACKED_FRAME: np.array([-1], np.int64),
                STATE_BYTES: np.array([state_bytes], np.int64),
            }
        )
        return tensors
    obj_ids = np.asarray(result.obj_ids, dtype=np.int64)
    order = np.argsort(obj_ids, kind="stable")
    ascending = bool(np.all(order == np.arange(len(order))))

    def rows(array: np.ndarray) -> np.ndarray:  # no copy of rows already in order
        return array if ascending else array[order]

    size = (int(result.frame_size[0]), int(result.frame_size[1]))
    masks, boxes = _mask_answer(result, answer, size)
    tensors.update(
        {
            used: rows(masks),
            OBJ_IDS: rows(obj_ids),
            OBJECT_SCORES: rows(np.asarray(result.scores, np.float32)),
            OBJECT_SCORE_LOGITS: rows(np.asarray(result.object_score_logits, np.float32)),
            PRESENT: rows(np.asarray(result.present, bool)),
            MASK_BOXES: rows(np.asarray(boxes, np.float32)),
            FRAME_SIZE: np.array(size, np.int32),
            TRACKED_FRAME: np.array([result.frame_idx], np.int64),
            STATE_BYTES: np.array([state_bytes], np.int64),
        }
    )
    return tensors


def _mask_answer(
    result: FrameResult, answer: AnswerFormat, frame_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(the kind's mask output, boxes float32 [N, 4] in frame pixels), rows in result order."""
    if answer.kind == ANSWER_MASKS:
        return np.ascontiguousarray(result.masks, dtype=bool), result.boxes
    if answer.kind == ANSWER_RLE:
        counts = [r["counts"].encode("ascii") for r in rle.encode_masks(result.masks)]
        return np.array(counts, dtype=np.object_).reshape(-1), result.boxes
    size = answer.output_size(frame_size)
    with torch.inference_mode():
        logits = torch.as_tensor(result.low_res_logits).to(torch.float32)
        if answer.kind == ANSWER_LOGITS:
            resized = result.transfers.to_host(_resized(logits, size)[:, 0].contiguous())
            return resized, frame_boxes(resized > MASK_THRESHOLD, frame_size)
        masks = result.transfers.to_host(_thresholded(logits, size))
    return masks, frame_boxes(masks, frame_size)


def _resized(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits [N, 1, 256, 256] -> [N, 1, h, w] on their device (no copy at their own size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size, mode="bilinear", align_corners=False)


def _thresholded(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Masks bool [N, h, w] on the logits' device: resized logits > MASK_THRESHOLD, resized a
    bounded number of pixels at a time (UPSCALE_CHUNK_PIXELS of float32, at least one mask)."""
    height, width = size
    masks = torch.empty((logits.shape[0], height, width), dtype=torch.bool, device=logits.device)
    chunk = max(1, UPSCALE_CHUNK_PIXELS // (height * width))
    for start in range(0, logits.shape[0], chunk):
        part = _resized(logits[start : start + chunk], size)[:, 0]
        torch.gt(part, MASK_THRESHOLD, out=masks[start : start + chunk])
    return masks
