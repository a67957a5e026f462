"""Images as the client accepts them -> the tensor the server takes, or their RGB pixels.

Accepted: a file path (str or Path) or encoded bytes, sent as they are in `IMAGE`; a uint8
numpy array [H, W, 3] (RGB) or a PIL image, sent as pixels in `IMAGE_RAW`. Encoded images are
decoded as the server does: `Image.open(...).convert("RGB")`, no EXIF rotation.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from sam2_triton import wire
from sam2_triton.client.errors import Sam2ClientError

ImageLike = str | Path | bytes | bytearray | memoryview | np.ndarray | Image.Image


def _read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise Sam2ClientError(f"cannot read image {path}: {error.strerror or error}") from None


def image_tensor(image: ImageLike) -> dict[str, np.ndarray]:
    """{"IMAGE": object array [1] of the encoded bytes} or {"IMAGE_RAW": uint8 [H, W, 3]}."""
    if isinstance(image, (str, Path)):
        image = _read_file(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return {wire.IMAGE: np.array([bytes(image)], dtype=np.object_)}
    if isinstance(image, Image.Image):
        return {wire.IMAGE_RAW: np.asarray(image.convert("RGB"), dtype=np.uint8)}
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image arrays must be uint8 RGB [H, W, 3], got dtype {image.dtype}")
        return {wire.IMAGE_RAW: np.ascontiguousarray(image)}
    raise TypeError(
        "image must be a file path, encoded bytes, a uint8 numpy array or a PIL image, "
        f"got {type(image).__name__}"
    )


def load_rgb(image: ImageLike) -> np.ndarray:
    """Pixels uint8 [H, W, 3] RGB, decoded as the server decodes them."""
    if isinstance(image, (str, Path)):
        image = _read_file(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(image))) as opened:
                return np.asarray(opened.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError) as error:
            raise Sam2ClientError(f"cannot decode image: {error}") from None
    return image_tensor(image)[wire.IMAGE_RAW]
