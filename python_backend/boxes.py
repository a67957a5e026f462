"""The box of a mask, computed in one place for every caller.

`mask_bounds` finds the inclusive pixel bounds (x0, y0, x1, y1) of each mask's foreground: the
first and last foreground column and row. A mask whose only pixel is (row 5, column 3) has the
bounds (3, 5, 3, 5). The two conventions in use are stated from it:

- inclusive pixels, as the bounds are: SAM 2's `batched_mask_to_box` (the automatic mask
  generator) and the MASK_BOXES output of `track_video`; an empty mask gives zeros;
- pixel edges (`pixel_edges`: x1 + 1, y1 + 1, the box drawn around the pixels): SAMURAI's box,
  (3, 5, 4, 6) for the mask above; an empty mask has no box (None).

Two implementations give the same bounds: `mask_bounds` in numpy, for callers holding host
masks (the image predictor's answers, the automatic mask generator, SAMURAI's candidate boxes,
whose small bands it measures on the host), and `mask_bounds_torch` for masks that live on a
device (the video tracker's full-size masks): computed where the masks are, so that only the
[N, 4] bounds cross to the host, never the masks themselves.
"""

from __future__ import annotations

import numpy as np
import torch

PIXEL_EDGE_OFFSET = np.array([0, 0, 1, 1], dtype=np.int64)  # inclusive -> pixel-edge (x1, y1)


def mask_bounds(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks [N, H, W] (bool; other dtypes: nonzero is foreground) -> (bounds, present).

    bounds: int64 [N, 4] inclusive (x0, y0, x1, y1) pixel bounds of each mask's foreground,
    zeros for an empty mask; present: bool [N], the mask has a foreground pixel.
    """
    count, height, width = masks.shape
    if height == 0 or width == 0:
        return np.zeros((count, 4), np.int64), np.zeros((count,), bool)
    rows = masks.any(axis=2)  # [N, H]
    cols = masks.any(axis=1)  # [N, W]
    present = rows.any(axis=1)
    top = rows.argmax(axis=1)  # first True; 0 for an empty mask
    bottom = height - 1 - rows[:, ::-1].argmax(axis=1)
    left = cols.argmax(axis=1)
    right = width - 1 - cols[:, ::-1].argmax(axis=1)
    bounds = np.stack([left, top, right, bottom], axis=1).astype(np.int64, copy=False)
    return bounds * present[:, None], present


def mask_bounds_torch(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`mask_bounds` of masks [N, H, W] on their own device: (bounds int64 [N, 4], present bool
    [N]) on that device, equal to what `mask_bounds` gives for the same masks."""
    count, height, width = masks.shape
    if height == 0 or width == 0:
        return (
            torch.zeros((count, 4), dtype=torch.int64, device=masks.device),
            torch.zeros((count,), dtype=torch.bool, device=masks.device),
        )
    foreground = (masks if masks.dtype == torch.bool else masks != 0).view(torch.uint8)
    rows = foreground.amax(dim=2) > 0  # [N, H] (amax of uint8: faster than any() on the CPU)
    cols = foreground.amax(dim=1) > 0  # [N, W]
    present = rows.any(dim=1)
    row_index = torch.arange(height, device=masks.device)
    col_index = torch.arange(width, device=masks.device)
    top = torch.where(rows, row_index, height).amin(dim=1)
    bottom = torch.where(rows, row_index, -1).amax(dim=1)
    left = torch.where(cols, col_index, width).amin(dim=1)
    right = torch.where(cols, col_index, -1).amax(dim=1)
    bounds = torch.stack([left, top, right, bottom], dim=1)
    return bounds * present[:, None], present


def pixel_edges(bounds: np.ndarray) -> np.ndarray:
    """Inclusive bounds [..., 4] -> pixel-edge boxes float64 [..., 4] (x1 + 1, y1 + 1)."""
    return (bounds + PIXEL_EDGE_OFFSET).astype(np.float64)


def mask_edge_box(mask: np.ndarray) -> np.ndarray | None:
    """Pixel-edge box float64 [4] (x0, y0, x1, y1) of the foreground of `mask` bool [H, W];
    None if it is empty."""
    bounds, present = mask_bounds(mask[None])
    return pixel_edges(bounds[0]) if present[0] else None
