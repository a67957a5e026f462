"""SAM 2 image prediction over the exported networks, wherever they run.

`ImagePredictor` does what `SAM2ImagePredictor` does around its networks: preprocess the image,
add `no_mem_embed` to the stride-16 features (image mode), turn prompts into decoder inputs,
choose among mask tokens, upscale and threshold. The networks themselves are behind
`ImageNetworks`: ONNX Runtime in-process (`OnnxImageNetworks`, for tests and tools) or Triton
BLS calls to the network models (`python_backend/triton_io.py`, inside the server).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sam2_triton.python_backend.images import preprocess_image
from sam2_triton.python_backend.masks import (
    TokenChoice,
    answer_shape,
    check_mask_budget,
    clamp_low_res,
    masks_at_original_size,
    select_masks,
)
from sam2_triton.python_backend.prompts import DecoderPrompts

FEATURE_NAMES = ("image_embed", "high_res_feats_0", "high_res_feats_1")


class ImageNetworks(Protocol):
    """The two networks image prediction needs, by their I/O-contract tensor names."""

    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """image float32 [B, 3, 1024, 1024] -> image_embed, high_res_feats_0, high_res_feats_1."""

    def decode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """mask_decoder inputs -> masks, iou_scores, object_pointers, object_score_logits."""


class OnnxImageNetworks:
    """ImageNetworks in this process with ONNX Runtime (CPU unless providers say otherwise)."""

    def __init__(self, export_dir: os.PathLike, **session_options) -> None:
        from sam2_triton.python_backend.onnx_networks import OnnxNetworks

        self.networks = OnnxNetworks(
            export_dir, networks=("image_encoder", "mask_decoder"), **session_options
        )
        self.metadata = self.networks.metadata

    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return self.networks.run("image_encoder", image=image)

    def decode(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.networks.run("mask_decoder", **inputs)


@dataclass
class EncodedImage:
    """One image's decoder-ready features: image_embed has no_mem_embed added (image mode)."""

    image_embed: np.ndarray  # float32 [1, 256, 64, 64]
    high_res_feats_0: np.ndarray  # float32 [1, 32, 256, 256]
    high_res_feats_1: np.ndarray  # float32 [1, 64, 128, 128]
    original_size: tuple[int, int]  # (H, W) pixels

    @property
    def nbytes(self) -> int:
        return self.image_embed.nbytes + self.high_res_feats_0.nbytes + self.high_res_feats_1.nbytes


@dataclass
class Prediction:
    """Answer for N prompts, K masks each, at the original size H x W."""

    masks: np.ndarray  # bool [N, K, H, W]
    scores: np.ndarray  # float32 [N, K], predicted IoU
    low_res_masks: np.ndarray  # float32 [N, K, 256, 256], logits clamped to +-32


class ImagePredictor:
    """Encode images and answer prompts with `networks`, configured by the export's metadata.

    `max_mask_bytes` (the request limit) refuses answers whose masks would not fit, with
    InputError before they are allocated; None: no limit.
    """

    def __init__(
        self, networks: ImageNetworks, metadata: Mapping, max_mask_bytes: int | None = None
    ) -> None:
        self.networks = networks
        self.max_mask_bytes = max_mask_bytes
        settings = metadata["settings"]
        embed = np.asarray(metadata["constants"]["no_mem_embed"], dtype=np.float32)
        # no_mem_embed is [1, 1, C] in SAM 2 (added to [HW, B, C] tokens): per channel here.
        self.no_mem_embed = (
            embed.reshape(1, -1, 1, 1) if settings.get("directly_add_no_mem_embed", True) else None
        )
        self.token_choice = TokenChoice.from_metadata(metadata["decoder"])

    def condition_embedding(self, image_embed: np.ndarray) -> np.ndarray:
        """Raw stride-16 features [B, 256, 64, 64] -> image-mode decoder input (+ no_mem_embed)."""
        embed = image_embed.astype(np.float32, copy=True)
        if self.no_mem_embed is not None:
            embed += self.no_mem_embed
        return embed

    def condition(
        self, features: Mapping[str, np.ndarray], original_size: tuple[int, int]
    ) -> EncodedImage:
        """Raw image-encoder outputs of one image -> EncodedImage."""
        return EncodedImage(
            image_embed=self.condition_embedding(features["image_embed"]),
            high_res_feats_0=np.ascontiguousarray(features["high_res_feats_0"], dtype=np.float32),
            high_res_feats_1=np.ascontiguousarray(features["high_res_feats_1"], dtype=np.float32),
            original_size=(int(original_size[0]), int(original_size[1])),
        )

    def encode(self, image: np.ndarray) -> EncodedImage:
        """RGB uint8 [H, W, 3] -> EncodedImage (preprocess + image encoder)."""
        pixels, original_size = preprocess_image(image)
        return self.condition(self.networks.encode(pixels), original_size)

    def decode_logits(
        self, encoded: EncodedImage, prompts: DecoderPrompts
    ) -> tuple[np.ndarray, np.ndarray]:
        """All four tokens: logits [N, 4, 256, 256] and predicted IoU [N, 4]."""
        outputs = self.networks.decode(
            {
                "image_embed": encoded.image_embed,
                "high_res_feats_0": encoded.high_res_feats_0,
                "high_res_feats_1": encoded.high_res_feats_1,
                **prompts.as_decoder_inputs(),
            }
        )
        return outputs["masks"], outputs["iou_scores"]

    def postprocess(
        self,
        logits: np.ndarray,
        iou: np.ndarray,
        original_size: tuple[int, int],
        multimask_output: bool,
    ) -> Prediction:
        """Four-token decoder outputs -> the predictor's answer."""
        chosen, scores = select_masks(logits, iou, multimask_output, self.token_choice)
        return Prediction(
            masks=masks_at_original_size(chosen, original_size, self.max_mask_bytes),
            scores=np.ascontiguousarray(scores, dtype=np.float32),
            low_res_masks=clamp_low_res(chosen),
        )

    def check_answer(
        self, prompts: DecoderPrompts, multimask_output: bool, original_size: tuple[int, int]
    ) -> None:
        """InputError when the answer to `prompts` would exceed `max_mask_bytes` (call it
        before running a network for them)."""
        if self.max_mask_bytes is not None:
            shape = answer_shape(prompts.num_prompts, multimask_output, original_size)
            check_mask_budget(shape, self.max_mask_bytes)

    def predict(
        self, encoded: EncodedImage, prompts: DecoderPrompts, multimask_output: bool = True
    ) -> Prediction:
        self.check_answer(prompts, multimask_output, encoded.original_size)
        logits, iou = self.decode_logits(encoded, prompts)
        return self.postprocess(logits, iou, encoded.original_size, multimask_output)
