"""Image input of the image models: decode, check limits, and preprocess as SAM 2 does.

Decoding is PIL's `Image.open(...).convert("RGB")`, what the official examples feed
`SAM2ImagePredictor` (no EXIF rotation), for the formats of `wire.IMAGE_FORMATS` only.
Preprocessing is torchvision's functional equivalent of `SAM2Transforms`: to float in [0, 1],
resize to 1024x1024 (bilinear, antialias, aspect ratio not kept), normalize with ImageNet
mean / std.
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
from sam2_triton.wire import IMAGE_FORMATS

PIXEL_SETTING = "limits.max_image_pixels in configs/serving.yaml"
# 16-bit grey (PNG): scaled to 8 bits by the high byte, as PIL itself reads 16-bit RGB PNGs
# (its convert("RGB") would clip every value above 255 to white).
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Encoded bytes of one of IMAGE_FORMATS -> RGB uint8 [H, W, 3].

    The size is checked against `max_pixels` from the header, before any pixel is decoded.
    """
    if len(data) == 0:
        raise InputError("IMAGE is empty (0 bytes)")
    if len(data) > max_bytes:
        raise InputError(f"IMAGE is {len(data)} bytes, more than the limit of {max_bytes}")
    try:
        with warnings.catch_warnings():
            # PIL's own limit (Image.MAX_IMAGE_PIXELS) would speak before the configured one,
            # which is checked right after the header is read.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size
        check_image_size(height, width, max_pixels)
        return pil_to_rgb(image)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(_bomb_message(max_pixels)) from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise InputError(
            f"IMAGE could not be decoded as an image of the accepted formats "
            f"({', '.join(IMAGE_FORMATS)}): {type(exc).__name__}: {exc}"
        ) from None


def _bomb_message(max_pixels: int) -> str:
    """PIL refused a header above twice its MAX_IMAGE_PIXELS: say what the limit is."""
    decoder_limit = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
    if max_pixels < decoder_limit:
        return (
            f"IMAGE has more than {decoder_limit} pixels, more than the limit of {max_pixels} "
            f"({PIXEL_SETTING})"
        )
    return (
        f"IMAGE has more than {decoder_limit} pixels, the most the image decoder (PIL) accepts, "
        f"although {PIXEL_SETTING} allows {max_pixels}"
    )


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image -> RGB uint8 [H, W, 3]: `convert("RGB")`, 16-bit grey scaled to 8 bits."""
    if image.mode in SIXTEEN_BIT_MODES:
        grey = (np.clip(np.asarray(image), 0, 0xFFFF).astype(np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def check_image_size(height: int, width: int, max_pixels: int, name: str = "image") -> None:
    if height < 1 or width < 1:
        raise InputError(f"{name} is {width}x{height} pixels: both sides must be at least 1")
    if height * width > max_pixels:
        raise InputError(
            f"{name} is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels} ({PIXEL_SETTING})"
        )


def check_original_size(size: np.ndarray, max_pixels: int) -> tuple[int, int]:
    """ORIGINAL_SIZE [2] (H, W) -> (H, W), if a served image may have that size."""
    values = np.asarray(size).reshape(-1)
    if values.size != 2 or values.min() < 1:
        raise InputError(f"ORIGINAL_SIZE must be (height, width) >= 1, got {values.tolist()}")
    height, width = int(values[0]), int(values[1])
    check_image_size(height, width, max_pixels, "ORIGINAL_SIZE")
    return height, width


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
