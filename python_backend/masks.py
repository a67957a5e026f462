"""Mask post-processing of the image predictor: token choice, upscaling, thresholding.

The decoder graph returns the logits and predicted IoU of all four mask tokens. What the
official `SAM2ImagePredictor` returns is chosen here the same way its mask decoder does:
tokens 1-3 for multimask output; otherwise token 0, or, when the model uses
`dynamic_multimask_via_stability`, the best of tokens 1-3 wherever token 0 is unstable.
Upscaling is torch's bilinear interpolation (align_corners=False), as the reference, a bounded
chunk of masks at a time; answers over the request limit `max_mask_bytes` are refused before
anything is allocated (docs/serving.md#memory).

The image predictor and the video tracker keep their logits on a device and use the `_torch`
functions (`select_masks_torch`, `stability_scores_torch`, `masks_at_original_size_torch`,
`clamp_low_res_torch`); the host-array forms serve the automatic mask generator, whose
post-processing is host code, and compute the same values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.workspace import shared_workspace

MASK_THRESHOLD = 0.0  # logits above this are foreground (SAM2ImagePredictor default)
# SAM 2 clamps low-res logits to +-32: those the image predictor returns, and the previous logits
# the video predictor feeds back as mask input when a frame is corrected.
LOW_RES_LOGIT_LIMIT = 32.0
MULTIMASK_COUNT = 3  # masks per prompt of a multimask answer (tokens 1-3); otherwise 1
# Logits upscaled at once in float32: 64 MiB (at least one mask, so at most 200 MB at the
# default 50-Mpixel image limit).
UPSCALE_CHUNK_PIXELS = 1 << 24
# Where the limit on an answer's masks is set (named in the error a refused request gets).
MASK_BUDGET_SETTING = (
    "limits.max_mask_bytes in configs/serving.yaml, model parameter max_mask_bytes"
)


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


def stability_scores_torch(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """`stability_scores` of a tensor, on its device: float32 [...] from [..., H, W]."""
    flat = logits.flatten(-2)
    intersection = (flat > threshold + offset).sum(dim=-1).to(torch.float32)
    union = (flat > threshold - offset).sum(dim=-1).to(torch.float32)
    return torch.where(union > 0, intersection / union.clamp(min=1), 1.0)


def select_masks(
    logits: np.ndarray, iou: np.ndarray, multimask_output: bool, choice: TokenChoice | None
) -> tuple[np.ndarray, np.ndarray]:
    """`select_masks_torch` of host arrays: [N, 4, h, w] logits and [N, 4] IoU -> float32
    [N, K, h, w], [N, K] (K = 3 or 1)."""
    with torch.inference_mode():
        chosen, scores = select_masks_torch(
            float32_tensor(logits), float32_tensor(iou), multimask_output, choice
        )
    return chosen.numpy(), scores.numpy()


def select_masks_torch(
    logits: torch.Tensor, iou: torch.Tensor, multimask_output: bool, choice: TokenChoice | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 4, h, w] logits and [N, 4] IoU -> [N, K, h, w], [N, K] (K = 3 or 1), on their
    device; `choice` is needed for single-mask answers."""
    if multimask_output:
        return logits[:, 1:], iou[:, 1:]
    if choice is None:
        raise ValueError("a single-mask answer needs the decoder's TokenChoice")
    if not choice.dynamic_multimask_via_stability:
        return logits[:, :1], iou[:, :1]
    rows = torch.arange(logits.shape[0], device=logits.device)
    best = 1 + torch.argmax(iou[:, 1:], dim=-1)  # the first best, as numpy's argmax
    stable = stability_scores_torch(logits[:, 0], 0.0, choice.stability_delta)
    token = torch.where(stable >= choice.stability_thresh, 0, best)
    return logits[rows, token][:, None], iou[rows, token][:, None]


def answer_shape(
    num_prompts: int, multimask_output: bool, original_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Shape [N, K, H, W] of the MASKS an image model answers."""
    masks = MULTIMASK_COUNT if multimask_output else 1
    return (int(num_prompts), masks, int(original_size[0]), int(original_size[1]))


def check_mask_budget(shape: tuple[int, ...], max_mask_bytes: int, unit: str = "prompts") -> None:
    """InputError unless bool masks of `shape` ([N, K, H, W] or [N, H, W], one byte a pixel)
    fit in `max_mask_bytes`; `unit` names what the leading axis counts."""
    *counts, height, width = (int(n) for n in shape)
    total = math.prod(counts) * height * width
    if total > max_mask_bytes:
        described = f"{counts[0]} {unit}" + "".join(f" x {n} masks" for n in counts[1:])
        raise InputError(
            f"the answer would hold {described} of {width}x{height} pixels = {total} bytes "
            f"of masks, more than the limit of {max_mask_bytes} per request "
            f"({MASK_BUDGET_SETTING}): send fewer {unit}, fewer masks or a smaller image"
        )


def float32_tensor(array: np.ndarray) -> torch.Tensor:
    """A float32 CPU tensor of a host array: a view when it is already contiguous float32 and
    writable, else a copy (torch tensors cannot be read-only)."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def upscale_logits(logits: np.ndarray, original_size: tuple[int, int]) -> torch.Tensor:
    """[N, K, h, w] low-res logits -> [N, K, H, W] float32 tensor at the original size."""
    tensor = float32_tensor(logits)
    return F.interpolate(
        tensor, tuple(int(s) for s in original_size), mode="bilinear", align_corners=False
    )


def masks_at_original_size(
    logits: np.ndarray, original_size: tuple[int, int], max_mask_bytes: int | None = None
) -> np.ndarray:
    """Boolean masks [N, K, H, W]: upscaled logits > MASK_THRESHOLD (host arrays; see
    `masks_at_original_size_torch`, which does the work on the CPU tensors viewing them)."""
    with torch.inference_mode():
        masks = masks_at_original_size_torch(
            float32_tensor(logits),
            original_size,
            max_mask_bytes,
        )
    return masks.numpy()


def masks_at_original_size_torch(
    logits: torch.Tensor, original_size: tuple[int, int], max_mask_bytes: int | None = None
) -> torch.Tensor:
    """Boolean masks [N, K, H, W] on the device of `logits` [N, K, h, w]: upscaled logits
    (`upscale_logits`) > MASK_THRESHOLD.

    With `max_mask_bytes`, InputError before anything is allocated when the masks would not
    fit. Masks are upscaled UPSCALE_CHUNK_PIXELS at a time, each on its own (the result equals
    `upscale_logits` of all at once), into one float32 scratch from the thread's workspace
    (python_backend/workspace.py): the intermediate stays bounded, and a fresh buffer would
    cost page faults on CPU (16 masks at 1280x720: 32 ms fresh, 12 ms into a reused one).
    """
    height, width = (int(s) for s in original_size)
    shape = (*logits.shape[:-2], height, width)
    if max_mask_bytes is not None:
        check_mask_budget(shape, max_mask_bytes)
    planes = logits.to(torch.float32).reshape(-1, 1, *logits.shape[-2:])
    masks = torch.empty((planes.shape[0], 1, height, width), dtype=torch.bool, device=logits.device)
    chunk = max(1, UPSCALE_CHUNK_PIXELS // max(1, height * width))
    workspace = shared_workspace(logits.device)
    with workspace.scope():
        scratch = workspace.take((min(chunk, planes.shape[0]), 1, height, width), torch.float32)
        for start in range(0, planes.shape[0], chunk):
            part = planes[start : start + chunk]
            # F.interpolate(mode="bilinear", align_corners=False)'s kernel, writing into scratch
            upscaled = torch.ops.aten.upsample_bilinear2d.out(
                part, [height, width], False, None, None, out=scratch[: len(part)]
            )
            torch.gt(upscaled, MASK_THRESHOLD, out=masks[start : start + chunk])
    return masks.reshape(shape)


def clamp_low_res(logits: np.ndarray) -> np.ndarray:
    """Low-res logits clamped to +-LOW_RES_LOGIT_LIMIT, as float32 (a copy)."""
    return np.clip(logits, -LOW_RES_LOGIT_LIMIT, LOW_RES_LOGIT_LIMIT).astype(np.float32)


def clamp_low_res_torch(logits: torch.Tensor) -> torch.Tensor:
    """`clamp_low_res` of a tensor, on its device (a new float32 tensor)."""
    return logits.to(torch.float32).clamp(-LOW_RES_LOGIT_LIMIT, LOW_RES_LOGIT_LIMIT)
