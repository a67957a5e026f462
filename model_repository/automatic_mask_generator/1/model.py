"""SAM2AutomaticMaskGenerator behind Triton: image (+ setting overrides) -> COCO RLE masks."""

import json
from pathlib import Path

import numpy as np

from sam2_triton import wire
from sam2_triton.configs import RequestLimits
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.automatic_masks import AutomaticMaskGenerator, GeneratorSettings
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.image_predictor import ImagePredictor
from sam2_triton.python_backend.triton_io import (
    image_networks,
    model_parameters,
    read_image,
    respond_each,
    scalar,
    serving_device,
)


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.limits = RequestLimits.from_parameters(params)
        self.defaults = json.loads(params["generator_defaults"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.predictor = ImagePredictor(
            image_networks(params, version_dir, serving_device(args, params)),
            load_metadata(version_dir),
        )

    def _settings(self, request) -> GeneratorSettings:
        overrides = {}
        # The wire contract (client and server): setting -> (input name, dtype).
        for setting, (name, dtype) in wire.GENERATOR_SETTINGS.items():
            kind = bool if dtype is np.bool_ else int if np.issubdtype(dtype, np.integer) else float
            value = scalar(request, name, None, kind)
            if value is not None:
                overrides[setting] = value
        settings = GeneratorSettings.from_mapping(
            self.defaults,
            overrides,
            max_points_per_side=int(self.defaults["max_points_per_side"]),
            max_crop_n_layers=int(self.defaults["max_crop_n_layers"]),
        )
        if settings.points_per_batch > self.limits.max_prompts:
            raise InputError(
                f"POINTS_PER_BATCH {settings.points_per_batch} exceeds the decoder's maximum of "
                f"{self.limits.max_prompts} prompts per call"
            )
        return settings

    def _handle(self, request):
        settings = self._settings(request)
        image = read_image(request, self.limits)
        result = AutomaticMaskGenerator(self.predictor, settings).generate(image)
        return {
            wire.RLE_COUNTS: np.array([r["counts"].encode() for r in result.rles], np.object_),
            wire.GENERATED_BOXES: result.boxes.astype(np.float32).reshape(-1, 4),
            wire.AREAS: result.areas.astype(np.int64),
            wire.PREDICTED_IOUS: result.predicted_ious.astype(np.float32),
            wire.STABILITY_SCORES: result.stability_scores.astype(np.float32),
            wire.GENERATED_POINTS: result.point_coords.astype(np.float32).reshape(-1, 2),
            wire.CROP_BOXES: result.crop_boxes.astype(np.float32).reshape(-1, 4),
            wire.ORIGINAL_SIZE: np.array(result.original_size, dtype=np.int32),
        }

    def execute(self, requests):
        return respond_each(requests, self._handle, "automatic_mask_generator")
