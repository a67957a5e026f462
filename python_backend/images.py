"""Image input of the image models: decode, check limits, and preprocess as SAM 2 does.

Decoding is PIL's `Image.open(...).convert("RGB")`, what the official examples feed
`SAM2ImagePredictor` (no EXIF rotation). Preprocessing is torchvision's functional
equivalent of `SAM2Transforms`: to float in [0, 1], resize to 1024x1024 (bilinear, antialias,
aspect ratio not kept), normalize with ImageNet mean / std.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from sam2_triton.export.contract import IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD
from sam2_triton.python_backend.errors import InputError


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Encoded JPEG / PNG / ... bytes -> RGB uint8 [H, W, 3]."""
    if len(data) == 0:
        raise InputError("IMAGE is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InputError(f"IMAGE is {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            check_image_size(height, width, max_pixels)
            return np.asarray(image.convert("RGB"))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"IMAGE is too large to decode: {exc}") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise InputError(
            f"IMAGE could not be decoded as an image ({type(exc).__name__}: {exc})"
        ) from None


def check_image_size(height: int, width: int, max_pixels: int) -> None:
    if height < 1 or width < 1:
        raise InputError(f"image is {width}x{height} pixels: both sides must be at least 1")
    if height * width > max_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels}"
        )


def check_raw_image(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """IMAGE_RAW: uint8 [H, W, 3] RGB."""
    if image.dtype != np.uint8:
        raise InputError(f"IMAGE_RAW must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"IMAGE_RAW must be [height, width, 3] RGB, got shape {list(image.shape)}")
    check_image_size(image.shape[0], image.shape[1], max_pixels)
    return image


def preprocess_image(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 [H, W, 3] -> model input float32 [1, 3, 1024, 1024] and (H, W)."""
    with torch.inference_mode():
        tensor = TF.to_tensor(np.ascontiguousarray(image))
        tensor = TF.resize(
            tensor,
            [IMAGE_SIZE, IMAGE_SIZE],
            interpolation=InterpolationMode.BILINEAR,
            antialias=True,
        )
        tensor = TF.normalize(tensor, list(IMAGE_MEAN), list(IMAGE_STD))
    return tensor.unsqueeze(0).numpy(), (int(image.shape[0]), int(image.shape[1]))
