"""Interactive prompting with server-side embeddings (see config.pbtxt for the I/O).

A request with IMAGE / IMAGE_RAW encodes it (BLS: image_encoder) and returns a new IMAGE_ID;
requests with IMAGE_ID reuse the cached embeddings, so a click costs the decoder only.
RELEASE drops the embeddings after answering. Without prompts, MASKS / SCORES /
LOW_RES_MASKS have zero prompts. On GPU profiles the embeddings live in GPU memory (the
`device` parameter), bounded in bytes like on CPU.
"""

from pathlib import Path

import numpy as np

from sam2_triton.configs import RequestLimits
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.embedding_cache import EmbeddingCache
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.image_predictor import ImagePredictor
from sam2_triton.python_backend.metrics import EMBEDDING_CACHE_METRICS
from sam2_triton.python_backend.triton_io import (
    has_prompts,
    image_networks,
    model_metrics,
    model_parameters,
    optional_input,
    read_image,
    read_prompts,
    respond_each,
    scalar,
    serving_device,
)


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.limits = RequestLimits.from_parameters(params)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        # embeddings stay on the serving device: the cache holds device memory
        device = serving_device(args, params)
        self.predictor = ImagePredictor(
            image_networks(params, version_dir, device),
            load_metadata(version_dir),
            max_mask_bytes=self.limits.max_mask_bytes,
        )
        self.cache = EmbeddingCache(int(params["embedding_cache_bytes"]))
        self.metrics = model_metrics(EMBEDDING_CACHE_METRICS, "segment_interactive")

    def _handle(self, request):
        image_id = scalar(request, "IMAGE_ID", None, str)
        release = scalar(request, "RELEASE", False, bool)
        multimask = scalar(request, "MULTIMASK_OUTPUT", True, bool)
        sends_image = (
            optional_input(request, "IMAGE") is not None
            or optional_input(request, "IMAGE_RAW") is not None
        )
        if sends_image and image_id is not None:
            raise InputError(
                "send IMAGE (or IMAGE_RAW) to encode a new image, "
                "or IMAGE_ID of an encoded one, not both"
            )
        if sends_image:
            image = read_image(request, self.limits)
            size = image.shape[:2]
            # Check the prompts before the costly encoding, so a bad request caches nothing.
            prompts = read_prompts(request, size, self.limits) if has_prompts(request) else None
            if prompts is not None:
                self.predictor.check_answer(prompts, multimask, size)
            encoded = self.predictor.encode(image)
            image_id = self.cache.add(encoded)
        elif image_id is not None:
            encoded = self.cache.get(image_id)
            prompts = (
                read_prompts(request, encoded.original_size, self.limits)
                if has_prompts(request)
                else None
            )
            if prompts is None and not release:
                raise InputError(
                    "no prompt: send POINT_COORDS with POINT_LABELS and/or BOXES with IMAGE_ID"
                )
        else:
            raise InputError(
                "send IMAGE (or IMAGE_RAW) to encode an image, or IMAGE_ID of an encoded one"
            )

        height, width = encoded.original_size
        if prompts is not None:
            prediction = self.predictor.predict(encoded, prompts, multimask)
            masks, scores, low_res = prediction.masks, prediction.scores, prediction.low_res_masks
        else:
            masks = np.zeros((0, 0, height, width), dtype=bool)
            scores = np.zeros((0, 0), dtype=np.float32)
            low_res = np.zeros((0, 0, 256, 256), dtype=np.float32)
        if release:
            self.cache.release(image_id)
        return {
            "IMAGE_ID": np.array([image_id.encode()], dtype=np.object_),
            "ORIGINAL_SIZE": np.array([height, width], dtype=np.int32),
            "MASKS": masks,
            "SCORES": scores,
            "LOW_RES_MASKS": low_res,
        }

    def execute(self, requests):
        responses = respond_each(requests, self._handle, "segment_interactive", self.metrics)
        self._publish_cache()
        return responses

    def _publish_cache(self) -> None:
        self.metrics.set("sam2_embedding_cache_bytes", self.cache.nbytes)
        self.metrics.set("sam2_embedding_cache_entries", len(self.cache))
        self.metrics.sync_counter("sam2_embedding_cache_hits_total", self.cache.hits)
        self.metrics.sync_counter("sam2_embedding_cache_misses_total", self.cache.misses)
        self.metrics.sync_counter("sam2_embedding_cache_evictions_total", self.cache.evictions)
