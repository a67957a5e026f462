"""Client prompts (pixels) -> mask_decoder inputs; raw image_embed -> image-mode embedding.

ORIGINAL_SIZE and the answer's size are checked against the request limits here, before the
decoder runs (decode_masks takes ORIGINAL_SIZE from the client).
"""

from pathlib import Path

from sam2_triton.configs import RequestLimits
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.image_predictor import ImagePredictor
from sam2_triton.python_backend.images import check_original_size
from sam2_triton.python_backend.masks import float32_tensor
from sam2_triton.python_backend.triton_io import (
    model_parameters,
    read_prompts,
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
        prompts = read_prompts(request, size, self.limits)
        self.predictor.check_answer(prompts, scalar(request, "MULTIMASK_OUTPUT", True, bool), size)
        embed = self.predictor.condition_embedding(
            float32_tensor(required_input(request, "image_embed"))
        )
        return {"conditioned_image_embed": embed.numpy(), **prompts.as_decoder_inputs()}

    def execute(self, requests):
        return respond_each(requests, self._handle, "preprocess_prompts")
