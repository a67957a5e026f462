"""Video frames -> image-encoder input; mask prompts -> the model's 1024x1024 mask input.

`preprocess_frame(image, mode, device)`: RGB uint8 [H, W, 3] (host) -> float32
[1, 3, 1024, 1024] on `device`. Modes:

* "video": `SAM2VideoPredictor`'s loading (PIL bicubic resize on uint8, then normalised;
  bit-identical), on the host, then one upload;
* "device": the same numbers computed on the device: the uint8 frame is uploaded, resized with
  PIL's bicubic filter in PIL's own fixed-point integer arithmetic (same coefficients, same
  rounding, same clamping between the horizontal and the vertical pass), then normalised with
  the float32 lookup table "video" uses. Integer arithmetic has no rounding to differ between
  devices, so it equals "video" bit for bit (tests/test_video_tracking.py checks it);
* "image": `SAM2Transforms` of the image predictor (float, bilinear with antialias), on the
  device.

`prompt_mask_input`: bool [H, W] (host) -> float32 [1, 1, 1024, 1024] of 0/1 on the device, as
`add_new_mask`. `upload` is how every host value of the video path reaches the device.

Design notes (how the preprocessings differ): docs/video-tracker.md
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from sam2_triton.export.contract import IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD
from sam2_triton.python_backend.errors import InputError

PREPROCESSINGS = ("video", "image", "device")

_MEAN = np.asarray(IMAGE_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGE_STD, dtype=np.float32).reshape(3, 1, 1)

MASK_PROMPT_THRESHOLD = 0.5  # add_new_mask: resized mask >= 0.5 is foreground

# PIL's bicubic resize of 8-bit images (Pillow, src/libImaging/Resample.c): the cubic
# convolution kernel with a = -0.5 and support 2 (times the scale when reducing), weights
# normalised per output pixel in double, then made integers of PRECISION_BITS fractional bits;
# each pass sums uint8 x weight in int32 from 2**(PRECISION_BITS - 1) (rounding), shifts right
# by PRECISION_BITS and clamps to 0..255.
PIL_BICUBIC_A = -0.5
PIL_BICUBIC_SUPPORT = 2.0
PIL_PRECISION_BITS = 32 - 8 - 2


def upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on `device` (on the CPU: a view of the array, or of a copy
    when it is read-only). To a CUDA device the copy goes through pinned memory without
    blocking: a plain copy from pageable memory waits for the work already queued on the
    device, and the host would stop running ahead of it."""
    array = np.ascontiguousarray(array)
    tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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


def prompt_mask_input(mask: np.ndarray, device: torch.device) -> torch.Tensor:
    """bool [H, W] mask prompt (host) -> float32 [1, 1, 1024, 1024] of 0/1 on `device`
    (add_new_mask's resize): one upload of the bool mask, the resize on the device."""
    tensor = upload(np.asarray(mask, dtype=bool), device).to(torch.float32)[None, None]
    if tuple(tensor.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        tensor = F.interpolate(
            tensor,
            size=(IMAGE_SIZE, IMAGE_SIZE),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        tensor = (tensor >= MASK_PROMPT_THRESHOLD).to(torch.float32)
    return tensor


def _video_lookup_table() -> np.ndarray:
    """float32 [3, 256]: channel c of uint8 value v -> (float32(v / 255) - mean_c) / std_c,
    the float32 operations load_video_frames applies per pixel (so a lookup is exact)."""
    values = (np.arange(256) / 255.0).astype(np.float32)[None, :]
    return ((values - _MEAN[:, :, 0]) / _STD[:, :, 0]).astype(np.float32)


_VIDEO_LUT = _video_lookup_table()


def preprocess_video_frame(image: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [1, 3, 1024, 1024] exactly as load_video_frames (host)."""
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(image)).resize(
            (IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC
        )
    )
    out = np.empty((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for channel in range(3):
        np.take(_VIDEO_LUT[channel], resized[:, :, channel], out=out[0, channel])
    return out


def _pil_bicubic(x: float) -> float:
    """PIL's bicubic kernel (a = -0.5) at x."""
    x = abs(x)
    a = PIL_BICUBIC_A
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def pil_bicubic_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's fixed-point weights resizing `in_size` samples to `out_size` (precompute_coeffs
    and normalize_coeffs_8bpc, in the same double arithmetic): (first source index int64
    [out_size], weights int32 [out_size, taps]); taps past the image have weight 0."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = PIL_BICUBIC_SUPPORT * filter_scale
    taps = int(math.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, taps), np.int32)
    one = float(1 << PIL_PRECISION_BITS)
    inverse_scale = 1.0 / filter_scale
    for out in range(out_size):
        center = (out + 0.5) * scale
        low = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - low
        values = [_pil_bicubic((x + low - center + 0.5) * inverse_scale) for x in range(count)]
        total = 0.0
        for value in values:  # summed in order, as PIL does (sum() compensates since 3.12)
            total += value
        for x, value in enumerate(values):
            if total != 0.0:
                value /= total
            weights[out, x] = int(-0.5 + value * one) if value < 0 else int(0.5 + value * one)
        first[out] = low
    return first, weights


@functools.lru_cache(maxsize=32)
def _resize_pass(in_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(source rows int64 [taps, IMAGE_SIZE], weights int32 [taps, IMAGE_SIZE, 1]) on `device`
    for one pass from `in_size` to IMAGE_SIZE; source rows past the image are clamped (their
    weight is 0)."""
    first, weights = pil_bicubic_weights(in_size, IMAGE_SIZE)
    taps = weights.shape[1]
    rows = np.minimum(first[None, :] + np.arange(taps)[:, None], in_size - 1)
    return (
        torch.from_numpy(rows).to(device),
        torch.from_numpy(np.ascontiguousarray(weights.T)[:, :, None]).to(device),
    )


def _pil_resize_rows(pixels: torch.Tensor) -> torch.Tensor:
    """One PIL pass over the leading axis: uint8 [in, C] -> uint8 [IMAGE_SIZE, C]. Rows are
    gathered as uint8 and summed in int32 (PIL's accumulator)."""
    rows, weights = _resize_pass(int(pixels.shape[0]), pixels.device)
    total = pixels.index_select(0, rows[0]).to(torch.int32).mul_(weights[0])
    total.add_(1 << (PIL_PRECISION_BITS - 1))
    for tap in range(1, rows.shape[0]):
        total.addcmul_(pixels.index_select(0, rows[tap]), weights[tap])
    return total.bitwise_right_shift_(PIL_PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=8)
def _device_lookup_table(device: torch.device) -> torch.Tensor:
    """The "video" lookup table float32 [3, 256] on `device`."""
    return torch.from_numpy(_VIDEO_LUT).to(device)


def pil_resize_device(image: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] on a device -> uint8 [1024, 1024, 3], equal to PIL's bicubic resize of
    the same image (horizontal pass, then vertical; a pass PIL skips because the side is
    already 1024 is skipped here too). Each pass gathers whole rows of a layout whose leading
    axis is the one resized."""
    height, width, _ = image.shape
    pixels = image
    if width != IMAGE_SIZE:  # horizontal: [W, H * 3] -> [1024, H * 3]
        columns = pixels.permute(1, 0, 2).reshape(width, height * 3)
        pixels = _pil_resize_rows(columns).view(IMAGE_SIZE, height, 3).permute(1, 0, 2)
    if height != IMAGE_SIZE:  # vertical: [H, 1024 * 3] -> [1024, 1024 * 3]
        rows = pixels.reshape(height, IMAGE_SIZE * 3)
        pixels = _pil_resize_rows(rows).view(IMAGE_SIZE, IMAGE_SIZE, 3)
    return pixels


def preprocess_device_frame(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 [H, W, 3] (host) -> float32 [1, 3, 1024, 1024] on `device`, equal to
    `preprocess_video_frame` (module docstring): one upload of the uint8 frame."""
    resized = pil_resize_device(upload(image, device))
    table = _device_lookup_table(device)
    out = torch.empty((1, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.float32, device=device)
    for channel in range(3):
        values = resized[:, :, channel].reshape(-1).to(torch.int32)
        torch.index_select(table[channel], 0, values, out=out[0, channel].view(-1))
    return out


def preprocess_image_on_device(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 [H, W, 3] (host) -> float32 [1, 3, 1024, 1024] on `device`: SAM2Transforms
    (python_backend/images.py `preprocess_image`: to float / 255, bilinear resize with
    antialias, minus mean, divided by std; the same operations) after one upload."""
    pixels = upload(image, device)
    tensor = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    tensor = TF.resize(
        tensor, [IMAGE_SIZE, IMAGE_SIZE], interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    mean, std = _normalisation(device)
    return tensor.sub_(mean).div_(std)[None]


@functools.lru_cache(maxsize=8)
def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE_MEAN, IMAGE_STD as float32 [3, 1, 1] on `device` (TF.normalize's operands; it is
    not called because it checks std == 0 on the device, a read back to the host)."""
    return torch.from_numpy(_MEAN).to(device), torch.from_numpy(_STD).to(device)


def preprocess_frame(image: np.ndarray, mode: str, device: torch.device) -> torch.Tensor:
    """RGB uint8 [H, W, 3] (host) -> image-encoder input float32 [1, 3, 1024, 1024] on
    `device` (modes: module docstring)."""
    image = check_frame(image)
    if mode == "video":
        return upload(preprocess_video_frame(image), device)
    if mode == "device":
        return preprocess_device_frame(image, device)
    if mode == "image":
        return preprocess_image_on_device(image, device)
    raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, not {mode!r}")
