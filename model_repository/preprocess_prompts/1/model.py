"""Client prompts (pixels) -> mask_decoder inputs; raw image_embed -> image-mode embedding."""

from pathlib import Path

from sam2_triton.configs import RequestLimits
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.image_predictor import ImagePredictor
from sam2_triton.python_backend.triton_io import (
    model_parameters,
    read_prompts,
    required_input,
    respond_each,
)


class TritonPythonModel:
    def initialize(self, args):
        self.limits = RequestLimits.from_parameters(model_parameters(args))
        metadata = load_metadata(Path(args["model_repository"]) / args["model_version"])
        self.predictor = ImagePredictor(networks=None, metadata=metadata)

    def _handle(self, request):
        size = required_input(request, "ORIGINAL_SIZE").reshape(-1)
        if size.size != 2 or size.min() < 1:
            raise InputError(f"ORIGINAL_SIZE must be (height, width) >= 1, got {size.tolist()}")
        prompts = read_prompts(request, size, self.limits)
        embed = self.predictor.condition_embedding(required_input(request, "image_embed"))
        return {"conditioned_image_embed": embed, **prompts.as_decoder_inputs()}

    def execute(self, requests):
        return respond_each(requests, self._handle, "preprocess_prompts")
