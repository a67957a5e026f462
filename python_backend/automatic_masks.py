"""Automatic mask generation over a point grid, as `SAM2AutomaticMaskGenerator` does it.

The image (and, with crop layers, overlapping crops of it) is encoded once per crop; a regular
grid of single foreground clicks is decoded in batches; masks are kept when the predicted IoU
and the stability score pass their thresholds and when they do not touch a crop edge inside
the image; duplicates are removed with box NMS within each crop and then across crops
(preferring masks from smaller crops). Masks are kept as COCO RLEs between batches; logits
are upscaled and binarized a bounded chunk at a time (UPSCALE_CHUNK_PIXELS), so memory does not
grow with the number of points.

Coordinates are pixels; boxes of the result are (x, y, w, h) with w = x1 - x0 of the
inclusive XYXY box, as the reference's `bbox` (one less than COCO's toBbox width).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
import torch
from torchvision.ops import batched_nms, box_area

from sam2_triton.configs import field_types
from sam2_triton.errors import ConfigError
from sam2_triton.export.contract import IMAGE_SIZE, LOW_RES_MASK_SIZE
from sam2_triton.python_backend.boxes import mask_bounds
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.image_predictor import EncodedImage
from sam2_triton.python_backend.masks import (
    UPSCALE_CHUNK_PIXELS,
    TokenChoice,
    clamp_low_res,
    select_masks,
    upscale_logits,
)
from sam2_triton.python_backend.prompts import DecoderPrompts
from sam2_triton.python_backend.setting_values import (
    check_finite,
    check_int_range,
    check_unit_interval,
    scalar_value,
    typed_value,
)
from sam2_triton.rle import Rle, encode_masks
from sam2_triton.rle import area as rle_area
from sam2_triton.wire import FOREGROUND_LABEL

CROP_EDGE_TOLERANCE = 20.0  # pixels: a box side this close to an inner crop edge is dropped
LIMIT_KEYS = ("max_points_per_side", "max_crop_n_layers")  # serving.yaml keys beside settings
UNSUPPORTED_SETTINGS = {
    "min_mask_region_area": "hole / island removal needs OpenCV in the reference; "
    "its default 0 skips it, as here",
    "point_grids": "only the regular grid of points_per_side is supported",
    "output_mode": "masks are always returned as COCO RLE",
}

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 pixels, x1 / y1 exclusive (crop boxes)


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorSettings:
    """`SAM2AutomaticMaskGenerator`'s settings with its defaults (sam2 1.1.0).

    Not supported: `min_mask_region_area` (removing small holes and islands needs OpenCV in
    the reference; its default 0 skips that step, as here), `point_grids` (only the regular
    grid of `points_per_side`) and `output_mode` (always COCO RLE).
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    use_m2m: bool = False
    multimask_output: bool = True

    @classmethod
    def from_mapping(
        cls,
        defaults: Mapping[str, Any],
        overrides: Mapping[str, Any],
        max_points_per_side: int,
        max_crop_n_layers: int,
    ) -> GeneratorSettings:
        """Settings from serving defaults (serving.yaml) and a request's overrides, validated.

        Raises ConfigError for an unknown key in `defaults`, InputError naming the setting for
        an unknown or unsupported override or any value out of range.
        """
        known = {f.name for f in fields(cls)}
        unknown_defaults = sorted(set(defaults) - known - set(LIMIT_KEYS))
        if unknown_defaults:
            raise ConfigError(
                f"automatic_mask_generator defaults name unknown settings {unknown_defaults}"
            )
        for name in overrides:
            _check_override_name(name, known)
        values = {name: scalar_value(value) for name, value in defaults.items() if name in known}
        values.update({name: scalar_value(value) for name, value in overrides.items()})
        kinds = field_types(cls)
        settings = cls(
            **{name: typed_value(name, value, kinds[name]) for name, value in values.items()}
        )
        settings.check_limits(max_points_per_side, max_crop_n_layers)
        return settings

    def __post_init__(self) -> None:
        """Raise InputError naming the first setting out of its range (deployment limits aside)."""
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor"):
            check_int_range(name, getattr(self, name), 1, None)
        check_int_range("crop_n_layers", self.crop_n_layers, 0, None)
        for name in (
            "pred_iou_thresh",
            "stability_score_thresh",
            "box_nms_thresh",
            "crop_nms_thresh",
        ):
            check_unit_interval(name, getattr(self, name), upper_open=False)
        check_unit_interval("crop_overlap_ratio", self.crop_overlap_ratio, upper_open=True)
        check_finite("mask_threshold", self.mask_threshold)
        check_finite("stability_score_offset", self.stability_score_offset)
        if self.stability_score_offset < 0:
            raise InputError(
                f"stability_score_offset must be >= 0, got {self.stability_score_offset:g}"
            )
        if layer_points_per_side(self, self.crop_n_layers) < 1:
            raise InputError(
                f"crop_n_points_downscale_factor {self.crop_n_points_downscale_factor} leaves no "
                f"points in crop layer {self.crop_n_layers} (points_per_side "
                f"{self.points_per_side} // {self.crop_n_points_downscale_factor}**"
                f"{self.crop_n_layers} = 0): lower it or raise points_per_side"
            )

    def check_limits(self, max_points_per_side: int, max_crop_n_layers: int) -> None:
        """Raise InputError when the grid or the crop layers exceed the deployment's limits."""
        check_int_range("points_per_side", self.points_per_side, 1, max_points_per_side)
        check_int_range("crop_n_layers", self.crop_n_layers, 0, max_crop_n_layers)


def _check_override_name(name: str, known: set) -> None:
    if name in UNSUPPORTED_SETTINGS:
        raise InputError(f"setting {name!r} is not supported: {UNSUPPORTED_SETTINGS[name]}")
    if name not in known:
        raise InputError(f"unknown setting {name!r}; settings are: {', '.join(sorted(known))}")


# --- result ---------------------------------------------------------------------------------


@dataclass
class GeneratedMasks:
    """M masks of an image of `original_size` (H, W), in the reference's order."""

    rles: list[Rle]  # COCO RLE {"size": [H, W], "counts": str} each
    boxes: np.ndarray  # float32 [M, 4] (x, y, w, h) pixels
    areas: np.ndarray  # int64 [M] pixels
    predicted_ious: np.ndarray  # float32 [M]
    stability_scores: np.ndarray  # float32 [M]
    point_coords: np.ndarray  # float32 [M, 2] (x, y) pixels: the click that made the mask
    crop_boxes: np.ndarray  # float32 [M, 4] (x, y, w, h) pixels
    original_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.rles)

    def to_records(self) -> list[dict[str, Any]]:
        """The reference's `generate` output (output_mode="coco_rle"): one dict per mask."""
        return [
            {
                "segmentation": dict(self.rles[i]),
                "area": int(self.areas[i]),
                "bbox": self.boxes[i].tolist(),
                "predicted_iou": float(self.predicted_ious[i]),
                "point_coords": [self.point_coords[i].tolist()],
                "stability_score": float(self.stability_scores[i]),
                "crop_box": self.crop_boxes[i].tolist(),
            }
            for i in range(len(self))
        ]


# --- geometry -------------------------------------------------------------------------------


def layer_points_per_side(settings: GeneratorSettings, layer: int) -> int:
    """Points per side of the grid of crop layer `layer` (0: the whole image)."""
    return settings.points_per_side // settings.crop_n_points_downscale_factor**layer


def point_grid(points_per_side: int) -> np.ndarray:
    """float64 [n*n, 2] (x, y) cell centres of an n x n grid over [0, 1]^2, row by row."""
    half_cell = 1 / (2 * points_per_side)
    side = np.linspace(half_cell, 1 - half_cell, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(
    image_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> list[tuple[Box, int]]:
    """(crop box, layer) pairs: the whole image, then (2^i)^2 overlapping crops per layer i.

    Crops of a layer are listed column by column (x0 outer, y0 inner), as the reference.
    """
    height, width = image_size
    crops = [((0, 0, width, height), 0)]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(height, width) * (2 / per_side))
        crop_w = _crop_length(width, per_side, overlap)
        crop_h = _crop_length(height, per_side, overlap)
        for i in range(per_side):
            x0 = int((crop_w - overlap) * i)
            for j in range(per_side):
                y0 = int((crop_h - overlap) * j)
                crops.append(((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)), layer))
    return crops


def _crop_length(length: int, n_crops: int, overlap: int) -> int:
    """Side of each of `n_crops` crops that cover `length` pixels overlapping by `overlap`."""
    return int(math.ceil((overlap * (n_crops - 1) + length) / n_crops))


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """CPU bool [M, h, w] -> int64 [M, 4] inclusive (x0, y0, x1, y1), zeros for an empty mask
    (`batched_mask_to_box`): python_backend/boxes.py on the tensor's numpy view."""
    return torch.from_numpy(mask_bounds(masks.numpy())[0])


def near_inner_crop_edge(
    boxes: torch.Tensor, crop: Box, image_size: tuple[int, int]
) -> torch.Tensor:
    """bool [M]: a side of the image-frame box [M, 4] (XYXY) lies near a crop edge that is
    not also an image edge."""
    height, width = image_size
    crop_edges = torch.tensor(crop, dtype=torch.float32)
    image_edges = torch.tensor([0, 0, width, height], dtype=torch.float32)
    boxes = boxes.float()
    near_crop = (boxes - crop_edges).abs() <= CROP_EDGE_TOLERANCE
    near_image = (boxes - image_edges).abs() <= CROP_EDGE_TOLERANCE
    return (near_crop & ~near_image).any(dim=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """float32 [M, 4] (x0, y0, x1, y1) -> (x0, y0, x1 - x0, y1 - y0)."""
    out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, 4)
    out[:, 2:] -= out[:, :2]
    return out


def mask_stability(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """float32 [M]: IoU of logits [M, h, w] > threshold + offset and > threshold - offset.

    An empty union gives NaN, which no positive stability threshold keeps (as the reference).
    """
    inner = (logits > threshold + offset).flatten(1).sum(dim=1)
    outer = (logits > threshold - offset).flatten(1).sum(dim=1)
    return inner.float() / outer.float()


def masks_to_image_rles(masks: torch.Tensor, crop: Box, image_size: tuple[int, int]) -> list[Rle]:
    """bool [M, h, w] masks of crop `crop` -> COCO RLEs of masks of the whole image (H, W)."""
    x0, y0, x1, y1 = crop
    full = np.zeros((masks.shape[0], *image_size), dtype=bool)
    full[:, y0:y1, x0:x1] = masks.numpy()
    return encode_masks(full)


# --- generation -----------------------------------------------------------------------------


class MaskPredictor(Protocol):
    """What the generator needs of a predictor (ImagePredictor, or one calling Triton)."""

    def encode(self, image: np.ndarray) -> EncodedImage:
        """RGB uint8 [H, W, 3] -> decoder-ready features."""

    def decode_logits(
        self, encoded: EncodedImage, prompts: DecoderPrompts
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits float32 [N, 4, 256, 256] and predicted IoU float32 [N, 4] of all mask tokens."""


@dataclass
class _Candidates:
    """Masks kept so far; row i describes mask i. Boxes and points are in the frame of the
    step that holds them (a crop's, then the image's); RLEs are always of whole-image masks."""

    rles: list[Rle]
    boxes: torch.Tensor  # int64 [M, 4] inclusive (x0, y0, x1, y1) pixels
    ious: torch.Tensor  # float32 [M] predicted IoU
    stability_scores: torch.Tensor  # float32 [M]
    points: torch.Tensor  # float32 [M, 2] (x, y) pixels
    crop_boxes: torch.Tensor  # int64 [M, 4] (x0, y0, x1, y1) pixels, x1 / y1 exclusive

    @staticmethod
    def empty() -> _Candidates:
        return _Candidates(
            rles=[],
            boxes=torch.zeros((0, 4), dtype=torch.int64),
            ious=torch.zeros(0, dtype=torch.float32),
            stability_scores=torch.zeros(0, dtype=torch.float32),
            points=torch.zeros((0, 2), dtype=torch.float32),
            crop_boxes=torch.zeros((0, 4), dtype=torch.int64),
        )

    @staticmethod
    def concat(parts: Sequence[_Candidates]) -> _Candidates:
        if not parts:
            return _Candidates.empty()
        return _Candidates(
            rles=[rle for part in parts for rle in part.rles],
            boxes=torch.cat([p.boxes for p in parts]),
            ious=torch.cat([p.ious for p in parts]),
            stability_scores=torch.cat([p.stability_scores for p in parts]),
            points=torch.cat([p.points for p in parts]),
            crop_boxes=torch.cat([p.crop_boxes for p in parts]),
        )

    def select(self, keep: torch.Tensor) -> _Candidates:
        """The rows `keep` (int64 indices), in that order."""
        return _Candidates(
            rles=[self.rles[i] for i in keep.tolist()],
            boxes=self.boxes[keep],
            ious=self.ious[keep],
            stability_scores=self.stability_scores[keep],
            points=self.points[keep],
            crop_boxes=self.crop_boxes[keep],
        )

    def moved_by(self, crop: Box) -> _Candidates:
        """Boxes and points from the frame of `crop` into the image's."""
        offset = _box_offset(crop)
        return _Candidates(
            rles=self.rles,
            boxes=self.boxes + offset,
            ious=self.ious,
            stability_scores=self.stability_scores,
            points=self.points + offset[:2].float(),
            crop_boxes=self.crop_boxes,
        )


def _box_offset(crop: Box) -> torch.Tensor:
    """int64 [4] (x0, y0, x0, y0) of the crop: crop-frame XYXY + offset = image-frame XYXY."""
    return torch.tensor([crop[0], crop[1], crop[0], crop[1]], dtype=torch.int64)


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes [M, 4] (XYXY) that NMS keeps, by decreasing score; one category."""
    categories = torch.zeros(boxes.shape[0], dtype=torch.int64)
    return batched_nms(boxes.float(), scores, categories, iou_threshold=iou_threshold)


class AutomaticMaskGenerator:
    """`SAM2AutomaticMaskGenerator` over a predictor's image encoder and mask decoder.

    `token_choice` decides which token a single-mask answer uses (needed when
    multimask_output is false or use_m2m is set); by default the predictor's own.
    """

    def __init__(
        self,
        predictor: MaskPredictor,
        settings: GeneratorSettings,
        token_choice: TokenChoice | None = None,
    ) -> None:
        self.predictor = predictor
        self.settings = settings
        self.token_choice = token_choice or getattr(predictor, "token_choice", None)
        if self.token_choice is None and (settings.use_m2m or not settings.multimask_output):
            raise ValueError(
                "single-mask decoding (use_m2m, or multimask_output false) needs a TokenChoice: "
                "pass token_choice or a predictor that has one"
            )

    def generate(self, image: np.ndarray) -> GeneratedMasks:
        """RGB uint8 [H, W, 3] -> the generated masks, in the reference's order."""
        _check_image(image)
        image_size = (int(image.shape[0]), int(image.shape[1]))
        crops = crop_boxes(
            image_size, self.settings.crop_n_layers, self.settings.crop_overlap_ratio
        )
        _check_crops(crops, image_size)
        with torch.inference_mode():
            found = _Candidates.concat(
                [self._process_crop(image, crop, layer) for crop, layer in crops]
            )
            if len(crops) > 1:
                found = found.select(self._nms_across_crops(found))
        return _result(found, image_size)

    def _nms_across_crops(self, found: _Candidates) -> torch.Tensor:
        """Duplicates between crops: the mask from the smaller crop wins."""
        return _nms(found.boxes, 1 / box_area(found.crop_boxes), self.settings.crop_nms_thresh)

    def _process_crop(self, image: np.ndarray, crop: Box, layer: int) -> _Candidates:
        """Masks of one crop (layer `layer`), deduplicated, in the image frame."""
        x0, y0, x1, y1 = crop
        encoded = self.predictor.encode(np.ascontiguousarray(image[y0:y1, x0:x1]))
        crop_size = (y1 - y0, x1 - x0)
        grid = point_grid(layer_points_per_side(self.settings, layer))
        points = (grid * np.array(crop_size[::-1], dtype=np.float64)).astype(np.float32)
        image_size = (int(image.shape[0]), int(image.shape[1]))
        batch = self.settings.points_per_batch
        found = _Candidates.concat(
            [
                self._process_batch(encoded, points[start : start + batch], crop, image_size)
                for start in range(0, len(points), batch)
            ]
        )
        found = found.select(_nms(found.boxes, found.ious, self.settings.box_nms_thresh))
        return found.moved_by(crop)

    def _process_batch(
        self, encoded: EncodedImage, points: np.ndarray, crop: Box, image_size: tuple[int, int]
    ) -> _Candidates:
        """Masks of the clicks `points` float32 [B, 2] (crop pixels) that pass every filter.

        Boxes and points stay in the crop frame. Masks are upscaled a chunk at a time so that
        at most UPSCALE_CHUNK_PIXELS logits (or one mask) are held at the crop's size.
        """
        crop_size = (crop[3] - crop[1], crop[2] - crop[0])
        logits, ious, clicks = self._predict_clicks(encoded, points, crop_size)
        keep = self._keep_by_iou(ious)
        logits, ious, clicks = logits[keep.numpy()], ious[keep], clicks[keep]
        chunk = max(1, UPSCALE_CHUNK_PIXELS // (crop_size[0] * crop_size[1]))
        return _Candidates.concat(
            [
                self._filter_masks(
                    logits[s : s + chunk],
                    ious[s : s + chunk],
                    clicks[s : s + chunk],
                    crop,
                    image_size,
                )
                for s in range(0, len(logits), chunk)
            ]
        )

    def _predict_clicks(
        self, encoded: EncodedImage, points: np.ndarray, crop_size: tuple[int, int]
    ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Clicks [B, 2] -> one row per mask: low-res logits [M, 256, 256], IoU [M], click [M, 2].

        M = B * K with K masks per click (3 multimask, else 1), click-major; with use_m2m each
        mask is decoded once more from its own logits.
        """
        logits, ious = self._decode(
            encoded, points, None, crop_size, self.settings.multimask_output
        )
        per_click = logits.shape[1]
        logits = logits.reshape(-1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE)
        ious = ious.reshape(-1)
        points = np.repeat(points, per_click, axis=0)
        if self.settings.use_m2m:
            logits, ious = self._refine(encoded, points, clamp_low_res(logits), crop_size)
        return logits, torch.from_numpy(np.ascontiguousarray(ious)), torch.from_numpy(points)

    def _keep_by_iou(self, ious: torch.Tensor) -> torch.Tensor:
        """bool [M]: predicted IoU above pred_iou_thresh (all kept when it is 0)."""
        if self.settings.pred_iou_thresh > 0:
            return ious > self.settings.pred_iou_thresh
        return torch.ones(ious.shape, dtype=torch.bool)

    def _filter_masks(
        self,
        logits: np.ndarray,
        ious: torch.Tensor,
        points: torch.Tensor,
        crop: Box,
        image_size: tuple[int, int],
    ) -> _Candidates:
        """Low-res logits [m, 256, 256] -> the stable masks not cut by an inner crop edge."""
        crop_size = (crop[3] - crop[1], crop[2] - crop[0])
        crop_logits = upscale_logits(logits[:, None], crop_size)[:, 0]
        settings = self.settings
        scores = mask_stability(
            crop_logits, settings.mask_threshold, settings.stability_score_offset
        )
        if settings.stability_score_thresh > 0:
            stable = scores >= settings.stability_score_thresh
            crop_logits, ious, points, scores = (
                crop_logits[stable],
                ious[stable],
                points[stable],
                scores[stable],
            )
        masks = crop_logits > settings.mask_threshold
        del crop_logits
        boxes = mask_boxes(masks)
        inside = ~near_inner_crop_edge(boxes + _box_offset(crop), crop, image_size)
        masks, boxes = masks[inside], boxes[inside]
        return _Candidates(
            rles=masks_to_image_rles(masks, crop, image_size),
            boxes=boxes,
            ious=ious[inside],
            stability_scores=scores[inside],
            points=points[inside],
            crop_boxes=torch.tensor([crop], dtype=torch.int64).repeat(len(boxes), 1),
        )

    def _refine(
        self,
        encoded: EncodedImage,
        points: np.ndarray,
        low_res: np.ndarray,
        crop_size: tuple[int, int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """use_m2m: decode each click again with its mask as mask input, single-mask output.

        points float32 [M, 2], low_res float32 [M, 256, 256] (clamped) -> logits
        [M, 256, 256], IoU [M]; points_per_batch prompts per decoder call.
        """
        batch = self.settings.points_per_batch
        logits, ious = [], []
        for start in range(0, len(points), batch):
            chunk = slice(start, start + batch)
            refined, refined_iou = self._decode(
                encoded, points[chunk], low_res[chunk], crop_size, False
            )
            logits.append(refined[:, 0])
            ious.append(refined_iou[:, 0])
        return np.concatenate(logits), np.concatenate(ious)

    def _decode(
        self,
        encoded: EncodedImage,
        points: np.ndarray,
        mask_input: np.ndarray | None,
        crop_size: tuple[int, int],
        multimask_output: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One click per prompt -> the chosen low-res logits [B, K, 256, 256] and IoU [B, K]."""
        prompts = click_prompts(points, crop_size, mask_input)
        logits, ious = self.predictor.decode_logits(encoded, prompts)
        return select_masks(logits, ious, multimask_output, self.token_choice)


def click_prompts(
    points: np.ndarray, crop_size: tuple[int, int], mask_input: np.ndarray | None
) -> DecoderPrompts:
    """Foreground clicks float32 [B, 2] in pixels of a crop of size (h, w) -> decoder prompts.

    Coordinates become model-input pixels (x / w * 1024, y / h * 1024 in float32, as
    SAM2Transforms.transform_coords). mask_input: float32 [B, 256, 256] low-res logits, or
    None for none.
    """
    height, width = crop_size
    coords = points.astype(np.float32, copy=True)
    coords[:, 0] = coords[:, 0] / np.float32(width)
    coords[:, 1] = coords[:, 1] / np.float32(height)
    coords = (coords * np.float32(IMAGE_SIZE))[:, None, :]
    count = len(points)
    labels = np.full((count, 1), FOREGROUND_LABEL, dtype=np.int32)
    if mask_input is None:
        masks = np.zeros((count, 1, LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE), dtype=np.float32)
        has_mask = np.zeros(count, dtype=np.float32)
    else:
        masks = np.ascontiguousarray(mask_input[:, None], dtype=np.float32)
        has_mask = np.ones(count, dtype=np.float32)
    return DecoderPrompts(coords, labels, masks, has_mask)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise InputError(
            f"the image must be a uint8 array, got {getattr(image, 'dtype', type(image))}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"the image must be [height, width, 3] RGB, got shape {list(image.shape)}")


def _check_crops(crops: Sequence[tuple[Box, int]], image_size: tuple[int, int]) -> None:
    """Every crop must hold pixels (very small images with many crop layers would not)."""
    for (x0, y0, x1, y1), layer in crops:
        if x1 <= x0 or y1 <= y0:
            raise InputError(
                f"the {image_size[1]}x{image_size[0]} image is too small for crop layer {layer}: "
                f"its crop ({x0}, {y0}, {x1}, {y1}) is empty; lower crop_n_layers"
            )


def _result(found: _Candidates, image_size: tuple[int, int]) -> GeneratedMasks:
    """The kept candidates (image frame) -> GeneratedMasks."""
    return GeneratedMasks(
        rles=found.rles,
        boxes=xyxy_to_xywh(found.boxes.numpy()),
        areas=np.array([rle_area(rle) for rle in found.rles], dtype=np.int64),
        predicted_ious=found.ious.numpy().astype(np.float32),
        stability_scores=found.stability_scores.numpy().astype(np.float32),
        point_coords=found.points.numpy().astype(np.float32).reshape(-1, 2),
        crop_boxes=xyxy_to_xywh(found.crop_boxes.numpy()),
        original_size=image_size,
    )
