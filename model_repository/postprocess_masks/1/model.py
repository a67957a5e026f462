"""Four-token decoder outputs -> MASKS at the original size, SCORES, LOW_RES_MASKS."""

from pathlib import Path

from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.image_predictor import ImagePredictor
from sam2_triton.python_backend.triton_io import required_input, respond_each, scalar


class TritonPythonModel:
    def initialize(self, args):
        metadata = load_metadata(Path(args["model_repository"]) / args["model_version"])
        self.predictor = ImagePredictor(networks=None, metadata=metadata)

    def _handle(self, request):
        size = required_input(request, "ORIGINAL_SIZE").reshape(-1)
        prediction = self.predictor.postprocess(
            required_input(request, "masks"),
            required_input(request, "iou_scores"),
            (int(size[0]), int(size[1])),
            scalar(request, "MULTIMASK_OUTPUT", True, bool),
        )
        return {
            "MASKS": prediction.masks,
            "SCORES": prediction.scores,
            "LOW_RES_MASKS": prediction.low_res_masks,
        }

    def execute(self, requests):
        return respond_each(requests, self._handle, "postprocess_masks")
