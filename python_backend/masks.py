"""Mask post-processing of the image predictor: token choice, upscaling, thresholding.

The decoder graph returns the logits and predicted IoU of all four mask tokens. What the
official `SAM2ImagePredictor` returns is chosen here the same way its mask decoder does:
tokens 1-3 for multimask output; otherwise token 0, or, when the model uses
`dynamic_multimask_via_stability`, the best of tokens 1-3 wherever token 0 is unstable.
Upscaling is torch's bilinear interpolation (align_corners=False), as the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.0  # logits above this are foreground (SAM2ImagePredictor default)
# SAM 2 clamps low-res logits to +-32: those the image predictor returns, and the previous logits
# the video predictor feeds back as mask input when a frame is corrected.
LOW_RES_LOGIT_LIMIT = 32.0


@dataclass(frozen=True)
class TokenChoice:
    """Decoder settings that decide which mask token a single-mask answer uses."""

    dynamic_multimask_via_stability: bool
    stability_delta: float
    stability_thresh: float

    @classmethod
    def from_metadata(cls, decoder: Mapping[str, Any]) -> TokenChoice:
        """From the `decoder` section of the export's metadata.json."""
        return cls(
            dynamic_multimask_via_stability=bool(decoder["dynamic_multimask_via_stability"]),
            stability_delta=float(decoder["dynamic_multimask_stability_delta"]),
            stability_thresh=float(decoder["dynamic_multimask_stability_thresh"]),
        )


def stability_scores(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """IoU of the masks at `threshold + offset` and `threshold - offset`; [...] from [..., H, W].

    An empty union scores 1, as in SAM 2.
    """
    flat = logits.reshape(*logits.shape[:-2], -1)
    intersection = np.count_nonzero(flat > threshold + offset, axis=-1).astype(np.float32)
    union = np.count_nonzero(flat > threshold - offset, axis=-1).astype(np.float32)
    return np.where(union > 0, intersection / np.maximum(union, 1), np.float32(1.0))


def select_masks(
    logits: np.ndarray, iou: np.ndarray, multimask_output: bool, choice: TokenChoice | None
) -> tuple[np.ndarray, np.ndarray]:
    """[N, 4, h, w] logits and [N, 4] IoU -> [N, K, h, w], [N, K] (K = 3 or 1); `choice` is
    needed for single-mask answers."""
    if multimask_output:
        return logits[:, 1:], iou[:, 1:]
    if choice is None:
        raise ValueError("a single-mask answer needs the decoder's TokenChoice")
    if not choice.dynamic_multimask_via_stability:
        return logits[:, :1], iou[:, :1]
    rows = np.arange(logits.shape[0])
    best = 1 + np.argmax(iou[:, 1:], axis=-1)
    stable = stability_scores(logits[:, 0], 0.0, choice.stability_delta) >= choice.stability_thresh
    token = np.where(stable, 0, best)
    return logits[rows, token][:, None], iou[rows, token][:, None]


def upscale_logits(logits: np.ndarray, original_size: tuple[int, int]) -> torch.Tensor:
    """[N, K, h, w] low-res logits -> [N, K, H, W] float32 tensor at the original size."""
    tensor = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    return F.interpolate(
        tensor, tuple(int(s) for s in original_size), mode="bilinear", align_corners=False
    )


def masks_at_original_size(logits: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Boolean masks [N, K, H, W]: upscaled logits > MASK_THRESHOLD."""
    with torch.inference_mode():
        return (upscale_logits(logits, original_size) > MASK_THRESHOLD).numpy()


def clamp_low_res(logits: np.ndarray) -> np.ndarray:
    """Low-res logits clamped to +-LOW_RES_LOGIT_LIMIT, as float32 (a copy)."""
    return np.clip(logits, -LOW_RES_LOGIT_LIMIT, LOW_RES_LOGIT_LIMIT).astype(np.float32)
