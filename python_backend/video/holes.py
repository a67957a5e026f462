"""SAM 2's hole filling of video masks, on the tracker's device (torch, no host transfer).

`SAM2VideoPredictor` (sam2 1.1.0, `fill_hole_area`, 8 in its video configs) passes every
low-resolution mask it predicts through `sam2.utils.misc.fill_holes_in_mask_scores`: the
8-connected components of background pixels (logit <= 0) of at most `fill_hole_area` pixels
become foreground, their logits set to 0.1; nothing else changes (1.1.0 removes no small
foreground specks). The reference labels the components with its CUDA extension (`sam2._C`)
and skips the step with a warning when the extension is missing; `fill_holes` computes the same
values with torch operations on any device:

1. Labels: every background pixel starts with its own index (1 .. H*W); `max_area - 1` times,
   each takes the largest label in its 3x3 window, only within the background (8-connected
   max-propagation). After k rounds a pixel holds the largest index within k steps of it.
2. A component of at most `max_area` pixels has a diameter of at most `max_area - 1` steps, so
   all its pixels then hold one label, and every pixel's background neighbours hold the same.
3. Per label (per mask), its pixel count and its count of "unsettled" pixels (a background
   neighbour holds another label) are summed with `scatter_add_`. A pixel is a hole iff its
   label has no unsettled pixel and at most `max_area` pixels. Exact: a label whose pixels
   are all settled is closed under background adjacency, so its pixels are a whole component,
   and a small component always ends settled (2.). Labels never cross components.

Fixed work: `max_area - 1` 3x3 window maxima and two scatters per call, whatever the masks hold;
no step reads a value back to the host, so the video path's transfers per frame do not change.

Where the reference applies it (sam2 1.1.0 `sam2_video_predictor.py`, vp; `sam2_base.py`, base):
`_run_single_frame_inference` fills `pred_masks` (vp:784-788) after `track_step` returned, so
the filled logits are the answer and the stored `pred_masks` (vp:789-803). Stored logits feed
the mask input of later clicks on that frame (vp:249-262) and the memory of prompted frames,
encoded by `propagate_in_video_preflight` from them (vp:504-521); a tracked frame's memory is
encoded inside `track_step` before the filling (base:869-877); object pointers never see it.
The tracker follows this (`VideoTracker._filled`, `_ObjectOutput.memory_logits`).

Design notes: docs/video-tracker.md (hole filling)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

FILLED_HOLE_LOGIT = 0.1  # fill_holes_in_mask_scores: a small positive score, now foreground
HOLE_FILLINGS = ("reference", "off")  # the setting's values (configs/serving.yaml, `video`)
MAX_EXACT_LABEL = 2**24  # pixel indices are float32 labels (window maxima): exact up to 2**24


def fill_hole_area(settings: Mapping, hole_filling: str) -> int:
    """Largest hole filled, in low-res pixels (0: none) for the export's `settings` (metadata
    "settings") and the setting `hole_filling`: "reference" fills as `SAM2VideoPredictor` does
    with its CUDA extension built (the model's `fill_hole_area`; 0 in exports without it),
    "off" as it does without the extension."""
    if hole_filling not in HOLE_FILLINGS:
        raise ValueError(f"hole_filling must be one of {HOLE_FILLINGS}, not {hole_filling!r}")
    if hole_filling == "off":
        return 0
    return max(int(settings.get("fill_hole_area", 0)), 0)


def hole_pixels(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """bool [N, C, H, W], on `logits`' device: the pixels of the 8-connected components of
    background (logits [N, C, H, W] <= 0) with at most `max_area` (>= 1) pixels, per mask."""
    if max_area < 1:
        raise ValueError(f"max_area must be >= 1, not {max_area}")
    n, c, h, w = logits.shape
    pixels = h * w
    if pixels >= MAX_EXACT_LABEL:
        raise ValueError(f"masks of {h}x{w} pixels are too large to label exactly")
    background = logits <= 0
    labels = _propagated_labels(background, min(max_area, pixels) - 1)
    largest = _window_max(labels, 0.0)  # over background neighbours (> 0)
    smallest = -_window_max(torch.where(background, -labels, float("-inf")), float("-inf"))
    unsettled = background & ((largest != labels) | (smallest != labels))
    # one slot per (mask, label); label 0 (foreground) gets slot 0 of its mask, counted as 0
    offsets = torch.arange(n * c, device=logits.device, dtype=torch.int64) * (pixels + 1)
    slots = (offsets.reshape(n, c, 1, 1) + labels.to(torch.int64)).reshape(-1)
    area = torch.zeros((n * c * (pixels + 1),), dtype=torch.int32, device=logits.device)
    area.scatter_add_(0, slots, background.reshape(-1).to(torch.int32))
    open_pixels = torch.zeros_like(area).scatter_add_(
        0, slots, unsettled.reshape(-1).to(torch.int32)
    )
    small = (area <= max_area) & (open_pixels == 0)
    return background & small.gather(0, slots).reshape(n, c, h, w)


def _propagated_labels(background: torch.Tensor, rounds: int) -> torch.Tensor:
    """float32 [N, C, H, W]: step 1 of the module docstring on bool `background`. Each round
    is `_window_max(labels, 0) * inside` computed in place: the labels live inside a zero
    border (labels >= 0, so the border changes no maximum) and the row maxima in one reused
    buffer, so a round allocates nothing (about a third faster on CPU than fresh tensors)."""
    n, c, h, w = background.shape
    inside = background.to(torch.float32)  # 1 on background, 0 on foreground
    index = torch.arange(1, h * w + 1, dtype=torch.float32, device=background.device)
    padded = torch.zeros((n, c, h + 2, w + 2), dtype=torch.float32, device=background.device)
    labels = padded[..., 1:-1, 1:-1]
    torch.mul(index.reshape(h, w), inside, out=labels)
    rows = torch.empty((n, c, h + 2, w), dtype=torch.float32, device=background.device)
    for _ in range(rounds):
        torch.maximum(padded[..., :-2], padded[..., 1:-1], out=rows)
        torch.maximum(rows, padded[..., 2:], out=rows)
        torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :], out=labels)  # rows is complete
        torch.maximum(labels, rows[..., 2:, :], out=labels)
        labels.mul_(inside)
    return labels


def _window_max(values: torch.Tensor, border: float) -> torch.Tensor:
    """Maximum over each pixel's 3x3 window of float [N, C, H, W], outside the image counting as
    `border`: `F.max_pool2d(values, 3, 1, 1)` (for border -inf), as two 1-D passes of
    `torch.maximum` over shifted views. Equal values; on CPU over ten times faster than the
    pooling kernel (0.8 ms against 14 ms for 16 masks of 256x256 on this project's CPU VM), on
    GPUs a handful of elementwise kernels."""
    padded = F.pad(values, (1, 1, 1, 1), value=border)
    rows = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """`fill_holes_in_mask_scores(logits, max_area)` of sam2 1.1.0 with its extension built:
    float logits [N, C, H, W] with the holes (`hole_pixels`) set to FILLED_HOLE_LOGIT; a new
    tensor of the same dtype on the same device."""
    return torch.where(hole_pixels(logits, max_area), FILLED_HOLE_LOGIT, logits)
