"""Prompt encoder + mask decoder + object-pointer projection, all four mask tokens out.

Selection among the tokens (multimask argmax, SAM 2's stability fallback, the object pointer
of the chosen token, the no-object blend) is left to the caller, which has the per-request
context (number of clicks, tracking or not) that decides it.
"""

from __future__ import annotations

import torch
from sam2.modeling.sam2_base import SAM2Base
from torch import nn


class MaskDecoderNet(nn.Module):
    """See `sam2_triton.export.contract.MASK_DECODER` for the tensors.

    Equals `PromptEncoder(points=(point_coords, point_labels), boxes=None, masks=...)` (which
    appends SAM 2's padding point), followed by `MaskDecoder.predict_masks` and
    `obj_ptr_proj` on every mask token. `image_embed` and the high-res features broadcast over
    prompts when num_images is 1 (SAM 2 repeats them, which gives the same values).
    """

    coord_scale: torch.Tensor  # buffer [2]: 1 / (width, height) of the model frame
    image_pe: torch.Tensor  # buffer [1, 256, 64, 64]: dense positional encoding

    def __init__(self, sam2_model: SAM2Base) -> None:
        super().__init__()
        self.prompt_encoder = sam2_model.sam_prompt_encoder
        self.mask_decoder = sam2_model.sam_mask_decoder
        self.obj_ptr_proj = sam2_model.obj_ptr_proj
        self.pred_obj_scores = bool(sam2_model.pred_obj_scores)
        height, width = self.prompt_encoder.input_image_size
        self.register_buffer(
            "coord_scale", torch.tensor([1.0 / width, 1.0 / height]), persistent=False
        )
        self.register_buffer(
            "image_pe", self.prompt_encoder.get_dense_pe().detach().clone(), persistent=False
        )

    def embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """[P,N,2] pixels, [P,N] labels -> sparse prompt embeddings [P,N+1,256].

        Appends the padding point (0, 0) with label -1, as the prompt encoder does when it is
        given points and no boxes (SAM 2's predictors always pass boxes as points).
        """
        pe = self.prompt_encoder
        coords = point_coords + 0.5  # pixel centres
        coords = torch.cat((coords, torch.zeros_like(coords[:, :1, :])), dim=1)
        labels = torch.cat((point_labels, -torch.ones_like(point_labels[:, :1])), dim=1)
        embedding = pe.pe_layer._pe_encoding(coords * self.coord_scale)
        embedding = torch.where(
            (labels == -1).unsqueeze(-1),
            torch.zeros_like(embedding) + pe.not_a_point_embed.weight,
            embedding,
        )
        for label, point_embed in enumerate(pe.point_embeddings):
            embedding = torch.where(
                (labels == label).unsqueeze(-1), embedding + point_embed.weight, embedding
            )
        return embedding

    def embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """Dense prompt embeddings [P,256,64,64]: the mask's, or the learned no-mask embedding."""
        pe = self.prompt_encoder
        mask_embedding = pe.mask_downscaling(mask_input)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(mask_embedding)
        use_mask = (has_mask_input > 0.5).reshape(-1, 1, 1, 1)
        return torch.where(use_mask, mask_embedding, no_mask)

    def forward(
        self,
        image_embed: torch.Tensor,
        high_res_feats_0: torch.Tensor,
        high_res_feats_1: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        decoder = self.mask_decoder
        sparse = self.embed_points(point_coords, point_labels)
        dense = self.embed_mask(mask_input, has_mask_input)

        token_weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if self.pred_obj_scores:
            token_weights.insert(0, decoder.obj_score_token.weight)
        output_tokens = torch.cat(token_weights, dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)
        tokens = torch.cat((output_tokens, sparse), dim=1)

        src = image_embed + dense
        hs, src = decoder.transformer(src, self.image_pe, tokens)
        first = 1 if self.pred_obj_scores else 0
        iou_token_out = hs[:, first, :]
        mask_tokens_out = hs[:, first + 1 : first + 1 + decoder.num_mask_tokens, :]

        batch, channels, height, width = dense.shape
        src = src.transpose(1, 2).reshape(batch, channels, height, width)
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        upscaled = act1(ln1(dc1(src) + high_res_feats_1))
        upscaled = act2(dc2(upscaled) + high_res_feats_0)

        hyper_in = torch.stack(
            [
                mlp(mask_tokens_out[:, i, :])
                for i, mlp in enumerate(decoder.output_hypernetworks_mlps)
            ],
            dim=1,
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou_scores = decoder.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = decoder.pred_obj_score_head(hs[:, 0, :])
        else:  # SAM 2 assumes the object is present: logit 10
            object_score_logits = 10.0 * torch.ones_like(iou_scores[:, :1])
        object_pointers = self.obj_ptr_proj(mask_tokens_out)
        return masks, iou_scores, object_pointers, object_score_logits
