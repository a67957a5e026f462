"""COCO run-length encoding of boolean masks, through pycocotools.

An RLE here is the JSON form {"size": [h, w], "counts": str} (compressed counts), as
`SAM2AutomaticMaskGenerator` returns with `output_mode="coco_rle"`. Shared by the server (the
automatic mask generator encodes) and the client (which decodes and writes JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Rle = dict[str, Any]  # {"size": [h, w], "counts": str}


def _coco_mask():
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise ImportError(
            "pycocotools is needed for COCO RLE masks: pip install pycocotools"
        ) from None
    return coco_mask


def encode(mask: np.ndarray) -> Rle:
    """Boolean mask [H, W] -> {"size": [H, W], "counts": str}."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be [H, W], got shape {list(mask.shape)}")
    encoded = _coco_mask().encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def encode_masks(masks: np.ndarray) -> list[Rle]:
    """Boolean masks [M, H, W] -> M RLEs (one pycocotools call for the whole stack)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [M, H, W], got shape {list(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    # pycocotools reads column-major uint8 [H, W, M].
    columns = np.asfortranarray(masks.transpose(1, 2, 0), dtype=np.uint8)
    return [
        {"size": [int(v) for v in e["size"]], "counts": e["counts"].decode("ascii")}
        for e in _coco_mask().encode(columns)
    ]


def from_counts(counts: bytes | str, size: Sequence[int]) -> Rle:
    """The JSON RLE of compressed `counts` for a mask of `size` (h, w)."""
    text = counts.decode("ascii") if isinstance(counts, bytes) else str(counts)
    return {"size": [int(size[0]), int(size[1])], "counts": text}


def _native(rle: Rle) -> dict:
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def decode(rle: Rle) -> np.ndarray:
    """{"size": [H, W], "counts": ...} -> boolean mask [H, W]."""
    return _coco_mask().decode(_native(rle)).astype(bool)


def area(rle: Rle) -> int:
    """Foreground pixels of the mask."""
    return int(_coco_mask().area(_native(rle)))


def bbox(rle: Rle) -> list[float]:
    """Tight box (x, y, w, h) in pixels; zeros for an empty mask."""
    return [float(v) for v in _coco_mask().toBbox(_native(rle))]
