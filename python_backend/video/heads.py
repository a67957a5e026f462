"""Decoder outputs (all four tokens) -> what SAM 2's `_forward_sam_heads` keeps for tracking.

`choose_outputs`: per object the mask token (multimask argmax IoU of tokens 1-3, a caller's
choice, or token 0 with the stability fallback), its predicted IoU, the object pointer, and
presence (logit <= threshold: mask logits NO_OBJ_SCORE, pointer blended with `no_obj_ptr`).
`MaskPromptHead`: SAM 2's `_use_mask_as_output` for mask prompts: the mask is the output
(logits +-10, 256x256, predicted IoU 1, object score +-10), only the pointer comes from the
decoder (mask as dense prompt through `mask_downsample`). Logits are [N, 1, 256, 256].

Both work on torch tensors on the tracker's device and read nothing back to the host.

Design notes: docs/video-tracker.md (decoder heads)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sam2_triton.export.contract import IMAGE_SIZE, LOW_RES_MASK_SIZE
from sam2_triton.python_backend.masks import TokenChoice, stability_scores_torch

NO_OBJ_SCORE = -1024.0  # SAM 2's mask logit for "object absent"
SAM2_PRESENCE_THRESHOLD = 0.0  # object present where its score logit is above this
MASK_OUTPUT_SCALE = 20.0  # _use_mask_as_output: logits = mask * 20 - 10 (sigmoid(-10) ~ 4.5e-5)
MASK_OUTPUT_BIAS = -10.0
MASK_DOWNSAMPLE_STRIDE = IMAGE_SIZE // LOW_RES_MASK_SIZE  # 4


@dataclass(frozen=True)
class HeadSettings:
    multimask_output_in_sam: bool
    multimask_min_pt_num: int
    multimask_max_pt_num: int
    multimask_output_for_tracking: bool
    use_multimask_token_for_obj_ptr: bool
    pred_obj_scores: bool
    soft_no_obj_ptr: bool
    fixed_no_obj_ptr: bool
    token_choice: TokenChoice
    no_obj_ptr: torch.Tensor | None  # float32 [256] on the device

    @classmethod
    def from_metadata(cls, metadata: Mapping, device: torch.device) -> HeadSettings:
        s = metadata["settings"]
        no_obj_ptr = metadata["constants"].get("no_obj_ptr")
        return cls(
            multimask_output_in_sam=bool(s["multimask_output_in_sam"]),
            multimask_min_pt_num=int(s["multimask_min_pt_num"]),
            multimask_max_pt_num=int(s["multimask_max_pt_num"]),
            multimask_output_for_tracking=bool(s["multimask_output_for_tracking"]),
            use_multimask_token_for_obj_ptr=bool(s["use_multimask_token_for_obj_ptr"]),
            pred_obj_scores=bool(s["pred_obj_scores"]),
            soft_no_obj_ptr=bool(s.get("soft_no_obj_ptr", False)),
            fixed_no_obj_ptr=bool(s.get("fixed_no_obj_ptr", False)),
            token_choice=TokenChoice.from_metadata(metadata["decoder"]),
            no_obj_ptr=(
                _constant(no_obj_ptr, device).reshape(-1) if no_obj_ptr is not None else None
            ),
        )

    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """SAM2Base._use_multimask: num_points counts clicks and box corners (0 when tracking)."""
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num
        )


def _constant(values, device: torch.device) -> torch.Tensor:
    """A metadata constant (nested lists) as a float32 tensor on `device` (one upload)."""
    return torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)


@dataclass
class HeadOutputs:
    """What tracking keeps of N decoder rows; tensors on the device."""

    low_res_masks: torch.Tensor  # float32 [N, 1, 256, 256], NO_OBJ_SCORE where absent
    scores: torch.Tensor  # float32 [N], predicted IoU of the chosen token
    object_pointers: torch.Tensor  # float32 [N, 256], after the no-object blend
    object_score_logits: torch.Tensor  # float32 [N, 1]
    present: torch.Tensor  # bool [N], object score logit > the presence threshold


def choose_outputs(
    decoded: Mapping[str, torch.Tensor],
    multimask: torch.Tensor,
    settings: HeadSettings,
    presence_threshold: float = SAM2_PRESENCE_THRESHOLD,
    multimask_tokens: torch.Tensor | None = None,
) -> HeadOutputs:
    """mask_decoder outputs of N objects and a bool [N] multimask flag -> HeadOutputs, all on
    the outputs' device.

    multimask_tokens: int64 [N], for multimask rows the token (1-3) to use instead of the
    argmax-IoU one where > 0 (SAMURAI's choice); ignored on single-mask rows.
    """
    masks = decoded["masks"]
    iou = decoded["iou_scores"]
    tokens = decoded["object_pointers"]
    score_logits = decoded["object_score_logits"].to(torch.float32).reshape(-1, 1)
    rows = torch.arange(masks.shape[0], device=masks.device)
    argmax_iou = 1 + torch.argmax(iou[:, 1:], dim=-1)
    best = argmax_iou
    if multimask_tokens is not None:
        best = torch.where(multimask_tokens > 0, multimask_tokens, argmax_iou)
    single = torch.zeros_like(argmax_iou)
    if settings.token_choice.dynamic_multimask_via_stability:
        stable = stability_scores_torch(
            masks[:, 0], 0.0, settings.token_choice.stability_delta
        ) >= (settings.token_choice.stability_thresh)
        single = torch.where(stable, 0, argmax_iou)
    mask_token = torch.where(multimask, best, single)
    if settings.use_multimask_token_for_obj_ptr:
        pointer_token = torch.where(multimask, best, 0)
    else:
        pointer_token = torch.zeros_like(best)

    low_res = masks[rows, mask_token][:, None].to(torch.float32)
    pointers = tokens[rows, pointer_token].to(torch.float32)
    present = score_logits > presence_threshold  # [N, 1]
    if settings.pred_obj_scores:
        low_res = torch.where(present[:, :, None, None], low_res, NO_OBJ_SCORE)
        if settings.soft_no_obj_ptr:
            weight = torch.sigmoid(score_logits)
        else:
            weight = present.to(torch.float32)
        pointers = no_object_blend(pointers, weight, settings)
    return HeadOutputs(
        low_res_masks=low_res,
        scores=iou[rows, mask_token].to(torch.float32),
        object_pointers=pointers,
        object_score_logits=score_logits,
        present=present.reshape(-1),
    )


def no_object_blend(
    pointers: torch.Tensor, weight: torch.Tensor, settings: HeadSettings
) -> torch.Tensor:
    """SAM 2's object-pointer blend: weight [N, 1] (1 present, 0 absent) of pointers [N, 256]."""
    if settings.fixed_no_obj_ptr:
        pointers = weight * pointers
    if settings.no_obj_ptr is not None:
        pointers = pointers + (1.0 - weight) * settings.no_obj_ptr[None]
    return pointers


@dataclass(frozen=True)
class MaskPromptHead:
    """SAM 2's `_use_mask_as_output` for mask prompts (see the module docstring)."""

    downsample_weight: torch.Tensor  # float32 [1, 1, 4, 4], SAM2Base.mask_downsample
    downsample_bias: torch.Tensor  # float32 [1]

    @classmethod
    def from_metadata(cls, metadata: Mapping, device: torch.device) -> MaskPromptHead | None:
        """None when the export cannot take mask prompts (no mask_downsample, or a model that
        decodes mask prompts with SAM instead of using them as output)."""
        constants = metadata["constants"]
        weight, bias = (
            constants.get("mask_downsample_weight"),
            constants.get("mask_downsample_bias"),
        )
        if weight is None or bias is None:
            return None
        if not metadata["settings"].get("use_mask_input_as_output_without_sam", False):
            return None
        stride = MASK_DOWNSAMPLE_STRIDE
        return cls(
            _constant(weight, device).reshape(1, 1, stride, stride),
            _constant(bias, device).reshape(1),
        )

    def decoder_input(self, masks: torch.Tensor) -> torch.Tensor:
        """Binary masks [N, 1, 1024, 1024] -> the decoder's dense prompt [N, 1, 256, 256]."""
        return F.conv2d(
            masks, self.downsample_weight, self.downsample_bias, stride=MASK_DOWNSAMPLE_STRIDE
        )

    def outputs(
        self,
        masks: torch.Tensor,
        pointers: torch.Tensor,
        settings: HeadSettings,
        presence_threshold: float = SAM2_PRESENCE_THRESHOLD,
    ) -> HeadOutputs:
        """Binary masks [N, 1, 1024, 1024] and the object pointers [N, 256] the decoder gave
        for them (after its own no-object blend) -> the masks as output (module docstring)."""
        n = masks.shape[0]
        present = masks.reshape(n, -1).any(dim=1).to(torch.float32)[:, None]  # [N, 1]
        low_res = F.interpolate(
            masks * MASK_OUTPUT_SCALE + MASK_OUTPUT_BIAS,
            size=(LOW_RES_MASK_SIZE, LOW_RES_MASK_SIZE),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        pointers = pointers.to(torch.float32).reshape(n, -1)
        if settings.pred_obj_scores:
            pointers = no_object_blend(pointers, present, settings)
        score_logits = MASK_OUTPUT_SCALE * present + MASK_OUTPUT_BIAS
        return HeadOutputs(
            low_res_masks=low_res,
            scores=torch.ones((n,), dtype=torch.float32, device=masks.device),
            object_pointers=pointers,
            object_score_logits=score_logits,
            present=(score_logits > presence_threshold).reshape(-1),
        )
