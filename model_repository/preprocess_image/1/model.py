"""IMAGE (encoded bytes) or IMAGE_RAW (uint8 HxWx3) -> model input [1, 3, 1024, 1024] + (H, W).

Prompts sent along are only checked here (against the decoded image size), so that a bad
prompt fails before the image encoder runs; preprocess_prompts converts them.
"""

import numpy as np

from sam2_triton.configs import RequestLimits
from sam2_triton.python_backend.images import preprocess_image
from sam2_triton.python_backend.triton_io import (
    has_prompts,
    model_parameters,
    read_image,
    read_prompts,
    respond_each,
)


class TritonPythonModel:
    def initialize(self, args):
        self.limits = RequestLimits.from_parameters(model_parameters(args))

    def _handle(self, request):
        image = read_image(request, self.limits)
        if has_prompts(request):
            read_prompts(request, image.shape[:2], self.limits)
        pixels, size = preprocess_image(image)
        return {"image": pixels, "ORIGINAL_SIZE": np.array(size, dtype=np.int32)}

    def execute(self, requests):
        return respond_each(requests, self._handle, "preprocess_image")
