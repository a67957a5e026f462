"""Four-token decoder outputs -> MASKS at the original size, SCORES, LOW_RES_MASKS.

ORIGINAL_SIZE and the answer's size are checked against the request limits before any mask is
allocated (max_image_pixels, max_mask_bytes).
"""

from pathlib import Path

from sam2_triton.configs import RequestLimits
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.image_predictor import ImagePredictor
from sam2_triton.python_backend.images import check_original_size
from sam2_triton.python_backend.masks import float32_tensor
from sam2_triton.python_backend.triton_io import (
    model_parameters,
    required_input,
    respond_each,
    scalar,
)


class TritonPythonModel:
    def initialize(self, args):
        self.limits = RequestLimits.from_parameters(model_parameters(args))
        metadata = load_metadata(Path(args["model_repository"]) / args["model_version"])
        self.predictor = ImagePredictor(
            networks=None, metadata=metadata, max_mask_bytes=self.limits.max_mask_bytes
        )

    def _handle(self, request):
        size = check_original_size(
            required_input(request, "ORIGINAL_SIZE"), self.limits.max_image_pixels
        )
        prediction = self.predictor.postprocess(
            float32_tensor(required_input(request, "masks")),
            float32_tensor(required_input(request, "iou_scores")),
            size,
            scalar(request, "MULTIMASK_OUTPUT", True, bool),
        )
        return {
            "MASKS": prediction.masks,
            "SCORES": prediction.scores,
            "LOW_RES_MASKS": prediction.low_res_masks,
        }

    def execute(self, requests):
        return respond_each(requests, self._handle, "postprocess_masks")
