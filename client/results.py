"""What the client returns: masks of prompts, image embeddings, automatically generated masks,
a video frame's tracked objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from sam2_triton import rle, wire
from sam2_triton.rle import Rle


@dataclass
class Segmentation:
    """Masks for one prompt (K masks) or N prompts, as `SAM2ImagePredictor.predict` returns.

    One prompt: masks bool [K, H, W], scores float32 [K] (predicted IoU), low_res_masks
    float32 [K, 256, 256] (logits). N prompts: the same with a leading N axis. K is 3 with
    multimask output, else 1; H, W is the original image size.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_masks: np.ndarray

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray], batched: bool) -> Segmentation:
        """From MASKS [N, K, H, W], SCORES [N, K], LOW_RES_MASKS [N, K, 256, 256]; the N axis
        is dropped when the request held one prompt given without it."""
        masks = np.asarray(outputs[wire.MASKS], dtype=bool)
        scores = np.asarray(outputs[wire.SCORES], dtype=np.float32)
        low_res = np.asarray(outputs[wire.LOW_RES_MASKS], dtype=np.float32)
        if not batched:
            masks, scores, low_res = masks[0], scores[0], low_res[0]
        return cls(masks=masks, scores=scores, low_res_masks=low_res)

    @property
    def batched(self) -> bool:
        """Whether the results carry a prompt axis N."""
        return self.scores.ndim == 2

    def best_index(self) -> int | np.ndarray:
        """Index of the highest-scoring mask: an int, or int64 [N] for N prompts."""
        index = np.argmax(self.scores, axis=-1)
        return index if self.batched else int(index)

    def best(self) -> np.ndarray:
        """The highest-scoring mask per prompt: bool [H, W], or [N, H, W] for N prompts."""
        if not self.batched:
            return self.masks[self.best_index()]
        return self.masks[np.arange(self.masks.shape[0]), self.best_index()]


@dataclass
class ImageEmbeddings:
    """Encoder output for one image, to decode prompts against without re-encoding it.

    image_embed float32 [1, 256, 64, 64] (raw, before `no_mem_embed`), high_res_feats_0
    float32 [1, 32, 256, 256], high_res_feats_1 float32 [1, 64, 128, 128], original_size (h, w).
    """

    image_embed: np.ndarray
    high_res_feats_0: np.ndarray
    high_res_feats_1: np.ndarray
    original_size: tuple[int, int]

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray]) -> ImageEmbeddings:
        height, width = (int(v) for v in np.asarray(outputs[wire.ORIGINAL_SIZE]).reshape(-1)[:2])
        return cls(
            image_embed=np.asarray(outputs[wire.IMAGE_EMBED], dtype=np.float32),
            high_res_feats_0=np.asarray(outputs[wire.HIGH_RES_FEATS_0], dtype=np.float32),
            high_res_feats_1=np.asarray(outputs[wire.HIGH_RES_FEATS_1], dtype=np.float32),
            original_size=(height, width),
        )

    def tensors(self) -> dict[str, np.ndarray]:
        """The four `decode_masks` inputs that stand for the image."""
        return {
            wire.IMAGE_EMBED: np.ascontiguousarray(self.image_embed, dtype=np.float32),
            wire.HIGH_RES_FEATS_0: np.ascontiguousarray(self.high_res_feats_0, dtype=np.float32),
            wire.HIGH_RES_FEATS_1: np.ascontiguousarray(self.high_res_feats_1, dtype=np.float32),
            wire.ORIGINAL_SIZE: np.asarray(self.original_size, dtype=np.int32),
        }


@dataclass
class GeneratedMask:
    """One mask of the automatic mask generator; fields as the reference's dict keys.

    rle: {"size": [h, w], "counts": str}; bbox and crop_box: (x, y, w, h) pixels; area: pixels;
    point_coords: [[x, y]], the grid point that produced the mask. `segmentation` (bool [H, W])
    is decoded from `rle` on first access.
    """

    rle: Rle
    bbox: list[float]
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]
    crop_box: list[float]

    @cached_property
    def segmentation(self) -> np.ndarray:
        return rle.decode(self.rle)

    def to_dict(self) -> dict[str, Any]:
        """The reference's record: segmentation (bool [H, W]), area, bbox, predicted_iou,
        point_coords, stability_score, crop_box."""
        return {
            "segmentation": self.segmentation,
            "area": self.area,
            "bbox": list(self.bbox),
            "predicted_iou": self.predicted_iou,
            "point_coords": [list(p) for p in self.point_coords],
            "stability_score": self.stability_score,
            "crop_box": list(self.crop_box),
        }


def generated_masks(outputs: Mapping[str, np.ndarray]) -> list[GeneratedMask]:
    """`automatic_mask_generator` outputs (one row per mask) -> GeneratedMask list, same order."""
    size = [int(v) for v in np.asarray(outputs[wire.ORIGINAL_SIZE]).reshape(-1)[:2]]
    counts = np.asarray(outputs[wire.RLE_COUNTS]).reshape(-1)
    boxes = np.asarray(outputs[wire.GENERATED_BOXES], dtype=np.float32).reshape(-1, 4)
    areas = np.asarray(outputs[wire.AREAS]).reshape(-1)
    ious = np.asarray(outputs[wire.PREDICTED_IOUS], dtype=np.float32).reshape(-1)
    stability = np.asarray(outputs[wire.STABILITY_SCORES], dtype=np.float32).reshape(-1)
    points = np.asarray(outputs[wire.GENERATED_POINTS], dtype=np.float32).reshape(-1, 2)
    crops = np.asarray(outputs[wire.CROP_BOXES], dtype=np.float32).reshape(-1, 4)
    return [
        GeneratedMask(
            rle=rle.from_counts(counts[i], size),
            bbox=boxes[i].tolist(),
            area=int(areas[i]),
            predicted_iou=float(ious[i]),
            stability_score=float(stability[i]),
            point_coords=[points[i].tolist()],
            crop_box=crops[i].tolist(),
        )
        for i in range(len(counts))
    ]


@dataclass
class VideoFrameResult:
    """What a video session's server answered for one frame (`track_video`).

    Rows follow ascending object id, N objects: obj_ids int64 [N]; scores float32 [N] (predicted
    IoU of each mask); object_score_logits float32 [N] (> 0: the object is on the frame);
    present bool [N]; boxes float32 [N, 4] (x0, y0, x1, y1 inclusive pixels of the frame, zeros
    for an empty mask; for "small_masks" / "logits" the frame pixels their masks cover).
    frame_index: the frame these masks belong to (-1 for a request that tracked nothing, such
    as END); frame_size: (H, W) of the video's frames ((0, 0) before the first); state_bytes:
    memory the server holds for the sequence after this request.

    The masks come as the session's `answer` kind asked (`Sam2Client.video_session`): `masks`
    holds them as bool [N, h, w] in every kind, at the frame's size for "masks" and "rle"
    (decoded from `rle` on first access), at the answer size for "small_masks", and where
    `logits` > 0 for "logits". `rle`: one COCO RLE per object ("rle" only); `logits`: float32
    [N, h, w] ("logits" only). `frame_masks()` gives masks at the frame's size in every kind.
    """

    frame_index: int
    obj_ids: np.ndarray
    scores: np.ndarray
    object_score_logits: np.ndarray
    present: np.ndarray
    boxes: np.ndarray
    state_bytes: int
    frame_size: tuple[int, int] = (0, 0)
    answer: str = wire.ANSWER_MASKS
    rle: list[Rle] | None = None
    logits: np.ndarray | None = None
    answer_masks: np.ndarray | None = field(default=None, repr=False)  # bool, as sent

    @classmethod
    def from_outputs(
        cls, outputs: Mapping[str, np.ndarray], answer: str = wire.ANSWER_MASKS
    ) -> VideoFrameResult:
        """From the `track_video` outputs a sequence of answer kind `answer` reads
        (`wire.track_outputs(answer)`)."""
        obj_ids = np.asarray(outputs[wire.OBJ_IDS], dtype=np.int64).reshape(-1)
        count = obj_ids.shape[0]
        height, width = (int(v) for v in np.asarray(outputs[wire.FRAME_SIZE]).reshape(-1)[:2])
        name = wire.ANSWER_OUTPUTS[answer]
        sent = np.asarray(outputs[name])
        if sent.shape[:1] != (count,) or sent.ndim != (1 if answer == wire.ANSWER_RLE else 3):
            raise ValueError(
                f"track_video answered {name} {list(sent.shape)} for {count} object(s)"
            )
        kind: dict[str, Any] = {}
        if answer == wire.ANSWER_RLE:
            kind["rle"] = [rle.from_counts(counts, (height, width)) for counts in sent]
        elif answer == wire.ANSWER_LOGITS:
            kind["logits"] = sent.astype(np.float32, copy=False)
        else:
            kind["answer_masks"] = sent.astype(bool, copy=False)
        return cls(
            frame_index=int(np.asarray(outputs[wire.TRACKED_FRAME]).reshape(-1)[0]),
            obj_ids=obj_ids,
            scores=np.asarray(outputs[wire.OBJECT_SCORES], dtype=np.float32).reshape(count),
            object_score_logits=np.asarray(
                outputs[wire.OBJECT_SCORE_LOGITS], dtype=np.float32
            ).reshape(count),
            present=np.asarray(outputs[wire.PRESENT], dtype=bool).reshape(count),
            boxes=np.asarray(outputs[wire.MASK_BOXES], dtype=np.float32).reshape(count, 4),
            state_bytes=int(np.asarray(outputs[wire.STATE_BYTES]).reshape(-1)[0]),
            frame_size=(height, width),
            answer=answer,
            **kind,
        )

    @cached_property
    def masks(self) -> np.ndarray:
        """bool [N, h, w]: the answer's masks (see the class); for "rle" decoded once."""
        if self.answer_masks is not None:
            return self.answer_masks
        if self.logits is not None:
            return self.logits > 0
        if not self.rle:
            return np.zeros((0, *self.frame_size), bool)
        return np.stack([rle.decode(one) for one in self.rle])

    def frame_masks(self) -> np.ndarray:
        """bool [N, H, W] at the frame's size: `masks` for "masks" and "rle"; for "small_masks"
        the small masks upscaled nearest-neighbour; for "logits" the logits upscaled bilinearly
        (Pillow; when upscaling, the server's own upscaling to float rounding: from 256x256
        logits, the "masks" answer but for pixels whose logit is within about 1e-4 of 0), > 0.
        Sized answers stand for the frame's masks to about one answer pixel (parts thinner than
        an answer pixel can be missing)."""
        masks = self.masks
        if masks.shape[1:] == tuple(self.frame_size):
            return masks
        height, width = self.frame_size
        if self.logits is not None:
            planes = np.ascontiguousarray(self.logits, dtype=np.float32)
            upscaled = [
                np.asarray(
                    Image.fromarray(plane).resize((width, height), Image.Resampling.BILINEAR)
                )
                for plane in planes  # float32 planes are Pillow's mode "F"
            ]
            return np.array(upscaled, dtype=np.float32).reshape(-1, height, width) > 0
        rows = _nearest(masks.shape[1], height)
        cols = _nearest(masks.shape[2], width)
        return masks[:, rows[:, None], cols[None, :]]

    def row(self, obj_id: int) -> int:
        """Row of object `obj_id`; KeyError if the frame has no such object."""
        rows = np.flatnonzero(self.obj_ids == obj_id)
        if rows.size == 0:
            raise KeyError(f"object {obj_id} is not tracked (objects: {self.obj_ids.tolist()})")
        return int(rows[0])

    def mask(self, obj_id: int) -> np.ndarray:
        """Mask of object `obj_id`, bool [h, w] (as `masks`)."""
        return self.masks[self.row(obj_id)]


def _nearest(source: int, target: int) -> np.ndarray:
    """Indices int64 [target] of the nearest source pixel (pixel centres, as Pillow's NEAREST)."""
    return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)
