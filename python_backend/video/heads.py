"""Decoder outputs (all four tokens) -> what SAM 2's `_forward_sam_heads` keeps for tracking.

Per object: the mask token (multimask: argmax predicted IoU of tokens 1-3; single mask: token 0,
or with `dynamic_multimask_via_stability` the best multimask token where token 0 is unstable),
its predicted IoU, the object pointer (the chosen multimask token when
`use_multimask_token_for_obj_ptr`, token 0 otherwise), and the presence handling: where the
object score logit is <= 0 the mask logits become NO_OBJ_SCORE and the pointer is blended with
`no_obj_ptr` (hard blend, or sigmoid of the score with `soft_no_obj_ptr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from sam2_triton.python_backend.masks import TokenChoice, stability_scores

NO_OBJ_SCORE = -1024.0  # SAM 2's mask logit for "object absent"


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
    no_obj_ptr: Optional[np.ndarray]  # float32 [256]

    @classmethod
    def from_metadata(cls, metadata: Mapping) -> "HeadSettings":
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
            no_obj_ptr=(np.asarray(no_obj_ptr, dtype=np.float32).reshape(-1)
                        if no_obj_ptr is not None else None),
        )

    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """SAM2Base._use_multimask: num_points counts clicks and box corners (0 when tracking)."""
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num
        )


@dataclass
class HeadOutputs:
    low_res_masks: np.ndarray  # float32 [N, 1, 256, 256], NO_OBJ_SCORE where absent
    scores: np.ndarray  # float32 [N], predicted IoU of the chosen token
    object_pointers: np.ndarray  # float32 [N, 256], after the no-object blend
    object_score_logits: np.ndarray  # float32 [N, 1]


def choose_outputs(decoded: Mapping[str, np.ndarray], multimask: np.ndarray,
                   settings: HeadSettings) -> HeadOutputs:
    """mask_decoder outputs of N objects and a bool [N] multimask flag -> HeadOutputs."""
    masks = decoded["masks"]
    iou = decoded["iou_scores"]
    tokens = decoded["object_pointers"]
    score_logits = np.asarray(decoded["object_score_logits"], dtype=np.float32).reshape(-1, 1)
    rows = np.arange(masks.shape[0])
    best = 1 + np.argmax(iou[:, 1:], axis=-1)
    single = np.zeros_like(best)
    if settings.token_choice.dynamic_multimask_via_stability:
        stable = stability_scores(masks[:, 0], 0.0, settings.token_choice.stability_delta) >= (
            settings.token_choice.stability_thresh)
        single = np.where(stable, 0, best)
    multimask = np.asarray(multimask, dtype=bool)
    mask_token = np.where(multimask, best, single)
    pointer_token = np.where(multimask & settings.use_multimask_token_for_obj_ptr, best, 0)

    low_res = masks[rows, mask_token][:, None].astype(np.float32, copy=True)
    pointers = tokens[rows, pointer_token].astype(np.float32, copy=True)
    if settings.pred_obj_scores:
        present = score_logits > 0  # [N, 1]
        low_res = np.where(present[:, :, None, None], low_res, np.float32(NO_OBJ_SCORE))
        if settings.soft_no_obj_ptr:
            weight = 1.0 / (1.0 + np.exp(-score_logits))
        else:
            weight = present.astype(np.float32)
        if settings.fixed_no_obj_ptr:
            pointers = weight * pointers
        if settings.no_obj_ptr is not None:
            pointers = pointers + (1.0 - weight) * settings.no_obj_ptr[None]
    return HeadOutputs(
        low_res_masks=low_res.astype(np.float32, copy=False),
        scores=iou[rows, mask_token].astype(np.float32),
        object_pointers=pointers.astype(np.float32, copy=False),
        object_score_logits=score_logits,
    )
