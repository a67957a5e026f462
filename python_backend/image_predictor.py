"""SAM 2 image prediction over the exported networks, wherever they run.

`ImagePredictor` does what `SAM2ImagePredictor` does around its networks: preprocess the image
(on the host, as the reference's transforms do), add `no_mem_embed` to the stride-16 features
(image mode), turn prompts into decoder inputs, choose among mask tokens, upscale and threshold.
The networks are behind `ImageNetworks`, torch tensors on the networks' `device` in and out:
ONNX Runtime in this process (`OnnxImageNetworks`, for tests and tools) or Triton BLS calls to
the network models over DLPack (`python_backend/triton_io.py`, inside the server).

Everything between the uploaded pixels and the answer stays on that device: an `EncodedImage`
(what the interactive cache holds) is device memory, token choice, upscaling and thresholding
run there, and only the answer (masks, scores, low-res logits) crosses to the host, through the
counted door of `video/device.HostTransfers` (three transfers per answer, however many prompts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sam2_triton.python_backend.images import preprocess_image
from sam2_triton.python_backend.masks import (
    TokenChoice,
    answer_shape,
    check_mask_budget,
    clamp_low_res_torch,
    masks_at_original_size_torch,
    select_masks_torch,
)
from sam2_triton.python_backend.prompts import DecoderPrompts
from sam2_triton.python_backend.video.device import HostTransfers, resolve_device
from sam2_triton.python_backend.video.networks import OnnxVideoNetworks

FEATURE_NAMES = ("image_embed", "high_res_feats_0", "high_res_feats_1")


class ImageNetworks(Protocol):
    """The two networks image prediction needs, by their I/O-contract tensor names; torch
    tensors on `device` in and out."""

    device: torch.device

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image float32 [B, 3, 1024, 1024] -> image_embed, high_res_feats_0, high_res_feats_1."""
        ...

    def decode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """mask_decoder inputs -> masks, iou_scores (and the decoder's other outputs)."""
        ...


class OnnxImageNetworks(OnnxVideoNetworks):
    """ImageNetworks in this process with ONNX Runtime: the image encoder and mask decoder of
    an export (CPU unless `providers` say otherwise; I/O binding on the CUDA provider)."""

    def __init__(self, export_dir: os.PathLike, **session_options) -> None:
        super().__init__(export_dir, networks=("image_encoder", "mask_decoder"), **session_options)


@dataclass
class EncodedImage:
    """One image's decoder-ready features, float32 on the predictor's device; image_embed has
    no_mem_embed added (image mode)."""

    image_embed: torch.Tensor  # [1, 256, 64, 64]
    high_res_feats_0: torch.Tensor  # [1, 32, 256, 256]
    high_res_feats_1: torch.Tensor  # [1, 64, 128, 128]
    original_size: tuple[int, int]  # (H, W) pixels

    @property
    def nbytes(self) -> int:
        """Device bytes held (what the embedding cache counts)."""
        return sum(
            t.numel() * t.element_size()
            for t in (self.image_embed, self.high_res_feats_0, self.high_res_feats_1)
        )

    def features(self) -> dict[str, torch.Tensor]:
        """The three tensors by their decoder-input names."""
        return {name: getattr(self, name) for name in FEATURE_NAMES}


@dataclass
class Prediction:
    """Answer for N prompts, K masks each, at the original size H x W (host arrays)."""

    masks: np.ndarray  # bool [N, K, H, W]
    scores: np.ndarray  # float32 [N, K], predicted IoU
    low_res_masks: np.ndarray  # float32 [N, K, 256, 256], logits clamped to +-32


class ImagePredictor:
    """Encode images and answer prompts with `networks`, configured by the export's metadata.

    Works on `device` (default: the networks'; cpu without networks, as the ensembles'
    pre/post-processing steps use it). `max_mask_bytes` (the request limit) refuses answers
    whose masks would not fit, with InputError before they are allocated; None: no limit.
    `transfers` counts what crosses from the device to the host.
    """

    def __init__(
        self,
        networks: ImageNetworks | None,
        metadata: Mapping,
        max_mask_bytes: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.networks = networks
        self.max_mask_bytes = max_mask_bytes
        if device is None and networks is not None:
            device = networks.device
        self.device = resolve_device(device)
        self.transfers = HostTransfers()
        settings = metadata["settings"]
        embed = torch.tensor(metadata["constants"]["no_mem_embed"], dtype=torch.float32)
        # no_mem_embed is [1, 1, C] in SAM 2 (added to [HW, B, C] tokens): per channel here.
        self.no_mem_embed = (
            embed.reshape(1, -1, 1, 1).to(self.device)
            if settings.get("directly_add_no_mem_embed", True)
            else None
        )
        self.token_choice = TokenChoice.from_metadata(metadata["decoder"])

    def _networks(self) -> ImageNetworks:
        if self.networks is None:
            raise RuntimeError("this ImagePredictor has no networks (post-processing only)")
        return self.networks

    def condition_embedding(self, image_embed: torch.Tensor) -> torch.Tensor:
        """Raw stride-16 features [B, 256, 64, 64] -> image-mode decoder input (+ no_mem_embed),
        a new float32 tensor on the predictor's device."""
        embed = image_embed.to(device=self.device, dtype=torch.float32)
        if self.no_mem_embed is not None:
            return embed + self.no_mem_embed
        return embed.clone()

    def condition(
        self, features: Mapping[str, torch.Tensor], original_size: tuple[int, int]
    ) -> EncodedImage:
        """Raw image-encoder outputs of one image (device tensors) -> EncodedImage."""
        return EncodedImage(
            image_embed=self.condition_embedding(features["image_embed"]),
            high_res_feats_0=self._dense(features["high_res_feats_0"]),
            high_res_feats_1=self._dense(features["high_res_feats_1"]),
            original_size=(int(original_size[0]), int(original_size[1])),
        )

    def _dense(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device=self.device, dtype=torch.float32).contiguous()

    def encode(self, image: np.ndarray) -> EncodedImage:
        """RGB uint8 [H, W, 3] -> EncodedImage on the device (host preprocessing as the
        reference's, one upload of the pixels, the image encoder)."""
        pixels, original_size = preprocess_image(image)
        features = self._networks().encode(torch.from_numpy(pixels).to(self.device))
        return self.condition(features, original_size)

    def decode_on_device(
        self, encoded: EncodedImage, prompts: DecoderPrompts
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All four tokens, on the device: logits [N, 4, 256, 256] and predicted IoU [N, 4]."""
        inputs = encoded.features()
        for name, array in prompts.as_decoder_inputs().items():
            inputs[name] = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        outputs = self._networks().decode(inputs)
        return outputs["masks"], outputs["iou_scores"]

    def decode_logits(
        self, encoded: EncodedImage, prompts: DecoderPrompts
    ) -> tuple[np.ndarray, np.ndarray]:
        """`decode_on_device`'s logits and IoU as host arrays (the automatic mask generator's
        post-processing is host code)."""
        logits, iou = self.decode_on_device(encoded, prompts)
        return self.transfers.to_host(logits), self.transfers.to_host(iou)

    def postprocess(
        self,
        logits: torch.Tensor,
        iou: torch.Tensor,
        original_size: tuple[int, int],
        multimask_output: bool,
    ) -> Prediction:
        """Four-token decoder outputs (tensors on any device; moved to the predictor's) -> the
        predictor's answer on the host."""
        logits = logits.to(device=self.device, dtype=torch.float32)
        iou = iou.to(device=self.device, dtype=torch.float32)
        chosen, scores = select_masks_torch(logits, iou, multimask_output, self.token_choice)
        masks = masks_at_original_size_torch(chosen, original_size, self.max_mask_bytes)
        return Prediction(
            masks=self.transfers.to_host(masks),
            scores=np.ascontiguousarray(self.transfers.to_host(scores), dtype=np.float32),
            low_res_masks=self.transfers.to_host(clamp_low_res_torch(chosen)),
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
        logits, iou = self.decode_on_device(encoded, prompts)
        return self.postprocess(logits, iou, encoded.original_size, multimask_output)
