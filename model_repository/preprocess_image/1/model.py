"""IMAGE (encoded bytes) or IMAGE_RAW (uint8 HxWx3) -> model input [1, 3, 1024, 1024] + (H, W).

Prompts sent along are only checked here (against the decoded image size, and the answer's
size against max_mask_bytes), so that a bad request fails before the image encoder runs;
preprocess_prompts converts them. With the parameter `prompts_required` (the segment ensemble's
step, preprocess_segment) a request without prompts is refused here too.
"""

import numpy as np

from sam2_triton.configs import RequestLimits
from sam2_triton.python_backend.images import preprocess_image
from sam2_triton.python_backend.masks import answer_shape, check_mask_budget
from sam2_triton.python_backend.triton_io import (
    has_prompts,
    model_parameters,
    read_image,
    read_prompts,
    respond_each,
    scalar,
)


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.limits = RequestLimits.from_parameters(params)
        self.prompts_required = params.get("prompts_required", "0") == "1"

    def _handle(self, request):
        image = read_image(request, self.limits)
        if self.prompts_required or has_prompts(request):
            prompts = read_prompts(request, image.shape[:2], self.limits)
            multimask = scalar(request, "MULTIMASK_OUTPUT", True, bool)
            shape = answer_shape(prompts.num_prompts, multimask, image.shape[:2])
            check_mask_budget(shape, self.limits.max_mask_bytes)
        pixels, size = preprocess_image(image)
        return {"image": pixels, "ORIGINAL_SIZE": np.array(size, dtype=np.int32)}

    def execute(self, requests):
        return respond_each(requests, self._handle, "preprocess_image")
