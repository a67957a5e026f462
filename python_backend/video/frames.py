"""Video frames -> image-encoder input; mask prompts -> the model's 1024x1024 mask input.

`preprocess_frame(image, mode)`: RGB uint8 [H, W, 3] -> float32 [1, 3, 1024, 1024] and (H, W);
mode "video" (default) is `SAM2VideoPredictor`'s loading (PIL bicubic resize on uint8, then
normalised; bit-identical), "image" is `SAM2Transforms` of the image predictor.
`prompt_mask_input`: bool [H, W] -> float32 [1, 1, 1024, 1024] of 0/1, as `add_new_mask`.

Design notes (how the two preprocessings differ): docs/video-tracker.md
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sam2_triton.export.contract import IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD
from sam2_triton.python_backend.errors import InputError

PREPROCESSINGS = ("video", "image")

_MEAN = np.asarray(IMAGE_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGE_STD, dtype=np.float32).reshape(3, 1, 1)


MASK_PROMPT_THRESHOLD = 0.5  # add_new_mask: resized mask >= 0.5 is foreground


def check_frame(image: np.ndarray) -> np.ndarray:
    """The frame as an array; InputError unless RGB uint8 [H, W, 3] with H, W >= 1."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"a frame must be RGB uint8 [height, width, 3], got {image.dtype} {list(image.shape)}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"empty frame {list(image.shape)}")
    return image


def check_prompt_mask(mask: np.ndarray) -> np.ndarray:
    """A mask prompt as bool [H, W]; InputError unless it is 2-D, non-empty, bool or 0/1."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
        raise InputError(f"a mask prompt must be [height, width], got shape {list(mask.shape)}")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number) or not np.all(np.isin(mask, (0, 1))):
            raise InputError(f"a mask prompt must be boolean (or 0/1), got {mask.dtype}")
        mask = mask.astype(bool)
    return mask


def prompt_mask_input(mask: np.ndarray) -> np.ndarray:
    """bool [H, W] mask prompt -> float32 [1, 1, 1024, 1024] of 0/1 (add_new_mask's resize)."""
    with torch.inference_mode():
        tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        if tuple(tensor.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            tensor = F.interpolate(
                tensor,
                size=(IMAGE_SIZE, IMAGE_SIZE),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            tensor = (tensor >= MASK_PROMPT_THRESHOLD).float()
        return tensor.numpy()


def _video_lookup_table() -> np.ndarray:
    """float32 [3, 256]: channel c of uint8 value v -> (float32(v / 255) - mean_c) / std_c,
    the float32 operations load_video_frames applies per pixel (so a lookup is exact)."""
    values = (np.arange(256) / 255.0).astype(np.float32)[None, :]
    return ((values - _MEAN[:, :, 0]) / _STD[:, :, 0]).astype(np.float32)


_VIDEO_LUT = _video_lookup_table()


def preprocess_video_frame(image: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [1, 3, 1024, 1024] exactly as load_video_frames."""
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize(
            (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC
        )
    )
    out = np.empty((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for channel in range(3):
        np.take(_VIDEO_LUT[channel], resized[:, :, channel], out=out[0, channel])
    return out


def preprocess_frame(image: np.ndarray, mode: str = "video") -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 [H, W, 3] -> image-encoder input [1, 3, 1024, 1024] and (H, W)."""
    image = check_frame(image)
    size = (int(image.shape[0]), int(image.shape[1]))
    if mode == "video":
        return preprocess_video_frame(image), size
    if mode == "image":
        from sam2_triton.python_backend.images import preprocess_image

        return preprocess_image(image)[0], size
    raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, not {mode!r}")
