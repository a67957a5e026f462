"""The box of a mask, computed in one place for every caller.

`mask_bounds` finds the inclusive pixel bounds (x0, y0, x1, y1) of each mask's foreground: the
first and last foreground column and row. A mask whose only pixel is (row 5, column 3) has the
bounds (3, 5, 3, 5). The two conventions in use are stated from it:

- inclusive pixels, as the bounds are: SAM 2's `batched_mask_to_box` (the automatic mask
  generator), the MASK_BOXES output of `track_video`, and SAMURAI's box (the pixel indices of
  the foreground's extremes, measured by its Kalman filter); an empty mask gives zeros;
- pixel edges (`pixel_edges`: x1 + 1, y1 + 1, the box drawn around the pixels): (3, 5, 4, 6)
  for the mask above; an empty mask has no box (None).

Two implementations give the same bounds: `mask_bounds` in numpy, for callers holding host
masks (the image predictor's answers, the automatic mask generator), and `mask_bounds_torch`
for masks that live on a device (the video tracker's full-size masks): computed where the masks
are, so that only the [N, 4] bounds cross to the host, never the masks themselves.

`upsampled_mask_bounds_torch` gives the bounds of low-resolution logits upsampled bilinearly
(SAM 2's 256 -> 1024 resize) without building the upsampled maps: SAMURAI's candidate boxes,
measured on the device for all objects and candidates at once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


BAND_STEP = 16  # band sides are rounded up to a multiple of this (low-res pixels) to batch them


def upsampled_mask_bounds_torch(
    logits: torch.Tensor,
    low_res_bounds: np.ndarray,
    low_res_present: np.ndarray,
    scale: int,
    rows: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive bounds of the pixels > 0 of N low-res logit maps upsampled `scale` times
    (`F.interpolate`, bilinear, align_corners=False, float32: SAM 2's low-res -> 1024 resize),
    without building the [N, h * scale, w * scale] maps: (bounds int64 [N, 4] (x0, y0, x1, y1),
    zeros where empty; present bool [N]) on the logits' device.

    Map i is `logits[rows[i]]` of logits [M, h, w] (rows default: 0..N-1). `low_res_bounds`
    int [N, 4] and `low_res_present` bool [N] are the host copies of `mask_bounds_torch` of the
    maps' logits > 0 (False also skips a map: empty). An upsampled pixel mixes
    the 2 x 2 low-res logits around it with weights >= 0, so every pixel > 0 lies in the band of
    the low-res bounds grown by one low-res pixel. A window of the logits holding that band
    (sides rounded up to BAND_STEP, so that maps of similar size share one batch) is upsampled
    by `F.interpolate` itself: the same kernel, hence the same values, as the whole map, except
    at the window's edges, where only logits <= 0 mix.
    """
    count = len(low_res_present)
    height, width = logits.shape[-2:]
    device = logits.device
    rows = np.arange(count) if rows is None else np.asarray(rows)
    bounds = torch.zeros((count, 4), dtype=torch.int64, device=device)
    present = torch.zeros((count,), dtype=torch.bool, device=device)
    batches: dict[tuple[int, int], list[int]] = {}
    for i in np.flatnonzero(low_res_present):
        x0, y0, x1, y1 = (int(v) for v in low_res_bounds[i])
        side = (_window_side(y1 - y0 + 3, height), _window_side(x1 - x0 + 3, width))
        batches.setdefault(side, []).append(int(i))
    for (side_y, side_x), members in batches.items():
        top = np.clip(low_res_bounds[members, 1] - 1, 0, height - side_y)  # [B] window corners
        left = np.clip(low_res_bounds[members, 0] - 1, 0, width - side_x)  # (low-res pixels)
        index = torch.as_tensor(np.asarray(members), device=device)
        source = torch.as_tensor(rows[members], device=device)
        row_index = torch.as_tensor(top[:, None] + np.arange(side_y), device=device)
        col_index = torch.as_tensor(left[:, None] + np.arange(side_x), device=device)
        windows = logits[source[:, None, None], row_index[:, :, None], col_index[:, None, :]]
        upsampled = F.interpolate(
            windows[:, None].to(torch.float32),
            size=(scale * side_y, scale * side_x),
            mode="bilinear",
            align_corners=False,
        )[:, 0]
        found_bounds, found = mask_bounds_torch(upsampled > 0)
        corner = np.stack([left, top, left, top], axis=1) * scale
        offset = torch.as_tensor(corner, dtype=torch.int64, device=device)
        bounds[index] = (found_bounds + offset) * found[:, None]
        present[index] = found
    return bounds, present


def _window_side(band: int, size: int) -> int:
    """A band of `band` low-res pixels -> the window side (a multiple of BAND_STEP, <= size)."""
    return min(-(-band // BAND_STEP) * BAND_STEP, size)
