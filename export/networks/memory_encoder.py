"""Memory encoder: turns the chosen mask of a frame into that frame's spatial memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

from sam2_triton.errors import ExportError


class MemoryEncoderNet(nn.Module):
    """image_embed [B,256,64,64], mask_logits [B,1,H,W] (H=W=256 or 1024), object_score_logits
    [B,1], is_mask_from_points [B] -> memory_features [B,64,64,64].

    Equals `SAM2Base._encode_new_memory` (eval mode) on the high-res mask SAM 2 derives from
    the decoder's low-res logits (bilinear, align_corners=False); a 1024x1024 input passes the
    resize unchanged. Binarization applies per object where is_mask_from_points is 1. The
    memory position encoding is a constant of the memory-attention graph. SAM 2.0 models accept
    object_score_logits and ignore it (they have no no-object embedding).
    """

    def __init__(self, sam2_model: SAM2Base) -> None:
        super().__init__()
        if sam2_model.non_overlap_masks_for_mem_enc:
            raise ExportError(
                "non_overlap_masks_for_mem_enc couples objects inside the memory encoder and is "
                "not supported"
            )
        self.memory_encoder = sam2_model.memory_encoder
        self.image_size = int(sam2_model.image_size)
        self.sigmoid_scale = float(sam2_model.sigmoid_scale_for_mem_enc)
        self.sigmoid_bias = float(sam2_model.sigmoid_bias_for_mem_enc)
        self.no_obj_embed_spatial = sam2_model.no_obj_embed_spatial  # Parameter [1,64] or None

    def forward(
        self,
        image_embed: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        is_mask_from_points: torch.Tensor,
    ) -> torch.Tensor:
        high_res = F.interpolate(
            mask_logits,
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )
        binarize = (is_mask_from_points > 0.5).reshape(-1, 1, 1, 1)
        mask = torch.where(binarize, (high_res > 0).float(), torch.sigmoid(high_res))
        if self.sigmoid_scale != 1.0:
            mask = mask * self.sigmoid_scale
        if self.sigmoid_bias != 0.0:
            mask = mask + self.sigmoid_bias
        features = self.memory_encoder(image_embed, mask, skip_mask_sigmoid=True)["vision_features"]
        if self.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()  # [B,1]
            features = (
                features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
            )
        else:
            # SAM 2.0 has no no-object embedding. Adding zeros shaped by the input keeps
            # object_score_logits in the graph, so every size has the same I/O contract.
            features = features + torch.zeros_like(object_score_logits)[..., None, None]
        return features
