"""Image encoder: Hiera trunk + FPN neck + the decoder's high-resolution projections."""

from __future__ import annotations

import torch
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

from sam2_triton.errors import ExportError
from sam2_triton.export.contract import IMAGE_SIZE


class ImageEncoderNet(nn.Module):
    """image [B,3,1024,1024] -> image_embed [B,256,64,64], high_res_feats_0 [B,32,256,256],
    high_res_feats_1 [B,64,128,128].

    Equals `SAM2Base.forward_image(image)["backbone_fpn"]` reordered (stride 16 first). The
    stride-16 level is returned raw: `no_mem_embed` is added by the caller where SAM 2 adds it.

    Hiera resizes its absolute position embedding with bicubic interpolation on every call;
    TensorRT has no cubic Resize, and the result depends only on the weights and the fixed input
    size, so it is computed once here (by the official `_get_pos_embed`) and stored as a
    constant. The rest of `Hiera.forward` and `ImageEncoder.forward` runs the official modules.
    """

    trunk_pos_embed: torch.Tensor  # buffer [1, H/4, W/4, C]

    def __init__(self, sam2_model: SAM2Base) -> None:
        super().__init__()
        if not sam2_model.use_high_res_features_in_sam:
            raise ExportError("models without high-resolution decoder features are not supported")
        self.image_encoder = sam2_model.image_encoder
        self.conv_s0 = sam2_model.sam_mask_decoder.conv_s0
        self.conv_s1 = sam2_model.sam_mask_decoder.conv_s1
        trunk = self.image_encoder.trunk
        with torch.no_grad():
            tokens = trunk.patch_embed(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
            pos_embed = trunk._get_pos_embed(tokens.shape[1:3])  # [1, H/4, W/4, C]
        self.register_buffer("trunk_pos_embed", pos_embed.detach().clone(), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        trunk = self.image_encoder.trunk
        x = trunk.patch_embed(image) + self.trunk_pos_embed
        stages = []
        for i, block in enumerate(trunk.blocks):
            x = block(x)
            if i == trunk.stage_ends[-1] or (i in trunk.stage_ends and trunk.return_interm_layers):
                stages.append(x.permute(0, 3, 1, 2))
        features, _ = self.image_encoder.neck(stages)
        scalp = self.image_encoder.scalp
        stride4, stride8, stride16 = features[: len(features) - scalp] if scalp else features
        return stride16, self.conv_s0(stride4), self.conv_s1(stride8)
