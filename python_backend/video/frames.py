"""Video frames -> image-encoder input.

Two preprocessings exist in SAM 2 and they differ slightly:

* ``"video"`` (default here): what `SAM2VideoPredictor.init_state` does with a folder of JPEGs
  (`sam2.utils.misc.load_video_frames`): PIL resize of the uint8 RGB frame to 1024x1024 with
  Pillow's default filter for RGB (bicubic), still uint8, then /255 (float64) -> float32, minus
  mean, divided by std. Use it for parity with the official video predictor.
* ``"image"``: `SAM2Transforms` of the image predictor (python_backend/images.py): float first,
  torchvision bilinear resize with antialias, normalize.

The two inputs differ by a few grey levels around edges (bicubic on uint8 vs bilinear on float);
masks agree closely but not bit for bit. The tracker uses "video" unless told otherwise.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from PIL import Image

from sam2_triton.export.contract import IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD

PREPROCESSINGS = ("video", "image")

_MEAN = np.asarray(IMAGE_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGE_STD, dtype=np.float32).reshape(3, 1, 1)


def check_frame(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"a frame must be RGB uint8 [height, width, 3], got {image.dtype} {list(image.shape)}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty frame {list(image.shape)}")
    return image


def preprocess_video_frame(image: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [1, 3, 1024, 1024] exactly as load_video_frames."""
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC
    )
    pixels = (np.asarray(resized) / 255.0).astype(np.float32).transpose(2, 0, 1)
    return ((pixels - _MEAN) / _STD)[None].astype(np.float32, copy=False)


def preprocess_frame(image: np.ndarray, mode: str = "video") -> Tuple[np.ndarray, Tuple[int, int]]:
    """RGB uint8 [H, W, 3] -> image-encoder input [1, 3, 1024, 1024] and (H, W)."""
    image = check_frame(image)
    size = (int(image.shape[0]), int(image.shape[1]))
    if mode == "video":
        return preprocess_video_frame(image), size
    if mode == "image":
        from sam2_triton.python_backend.images import preprocess_image

        return preprocess_image(image)[0], size
    raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, not {mode!r}")
