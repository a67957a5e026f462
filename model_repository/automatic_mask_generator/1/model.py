"""SAM2AutomaticMaskGenerator behind Triton: image (+ setting overrides) -> COCO RLE masks."""

import json
from pathlib import Path

import numpy as np

from sam2_triton.configs import RequestLimits
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.automatic_masks import AutomaticMaskGenerator, GeneratorSettings
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.image_predictor import ImagePredictor
from sam2_triton.python_backend.triton_io import (
    BlsImageNetworks,
    model_parameters,
    read_image,
    respond_each,
    scalar,
)

# Request inputs that override a setting: input name -> (setting, type).
OVERRIDES = {
    "POINTS_PER_SIDE": ("points_per_side", int),
    "POINTS_PER_BATCH": ("points_per_batch", int),
    "PRED_IOU_THRESH": ("pred_iou_thresh", float),
    "STABILITY_SCORE_THRESH": ("stability_score_thresh", float),
    "STABILITY_SCORE_OFFSET": ("stability_score_offset", float),
    "BOX_NMS_THRESH": ("box_nms_thresh", float),
    "CROP_N_LAYERS": ("crop_n_layers", int),
    "CROP_NMS_THRESH": ("crop_nms_thresh", float),
    "CROP_OVERLAP_RATIO": ("crop_overlap_ratio", float),
    "CROP_N_POINTS_DOWNSCALE_FACTOR": ("crop_n_points_downscale_factor", int),
}


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.limits = RequestLimits.from_parameters(params)
        self.defaults = json.loads(params["generator_defaults"])
        metadata = load_metadata(Path(args["model_repository"]) / args["model_version"])
        self.predictor = ImagePredictor(BlsImageNetworks(), metadata)

    def _settings(self, request) -> GeneratorSettings:
        overrides = {}
        for name, (setting, kind) in OVERRIDES.items():
            value = scalar(request, name, None, kind)
            if value is not None:
                overrides[setting] = value
        settings = GeneratorSettings.from_mapping(
            self.defaults, overrides,
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
            "RLE_COUNTS": np.array([r["counts"].encode() for r in result.rles], dtype=np.object_),
            "BOXES": result.boxes.astype(np.float32).reshape(-1, 4),
            "AREAS": result.areas.astype(np.int64),
            "PREDICTED_IOUS": result.predicted_ious.astype(np.float32),
            "STABILITY_SCORES": result.stability_scores.astype(np.float32),
            "POINT_COORDS": result.point_coords.astype(np.float32).reshape(-1, 2),
            "CROP_BOXES": result.crop_boxes.astype(np.float32).reshape(-1, 4),
            "ORIGINAL_SIZE": np.array(result.original_size, dtype=np.int32),
        }

    def execute(self, requests):
        return respond_each(requests, self._handle, "automatic_mask_generator")
