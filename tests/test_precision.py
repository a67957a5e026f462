"""Reduced precision (PyTorch autocast, bf16 and fp16) stays within its bound against fp32.

The bounds are configs/precision_bounds.py's, measured by benchmarks/precision.py on a 30-frame
video. Here the same comparison runs on TEST_FRAMES frames (the CPU time of CI) against the same
bounds: per-network relative error on the contract's random inputs, and the mask IoU per object
and frame of VideoTracker at that precision against the fp32 tracker, two objects. fp16 is
skipped on a CPU for the benchmark's reason (benchmarks/precision.py, SLOW_ON_CPU).
"""

from __future__ import annotations

import numpy as np
import pytest

from sam2_triton.benchmarks.precision import (
    REDUCED_PRECISIONS,
    mask_ious,
    model_metadata,
    moving_objects_video,
    network_errors,
    skip_reason,
    track_masks,
)
from sam2_triton.configs import get_model
from sam2_triton.configs.precision_bounds import PRECISION_BOUNDS

TEST_FRAMES = 6  # the benchmark (and the bounds) use 30
TEST_OBJECTS = 2
FP32_TOLERANCE = 1e-5  # PyTorch fp32 against itself run again: the same numbers


@pytest.fixture(scope="module")
def fp32_run(test_checkpoint):
    """(checkpoint, metadata, frames, fp32 networks, fp32 masks [T, N, H, W])."""
    from sam2_triton.python_backend.video.networks import TorchVideoNetworks

    spec = get_model("tiny")
    checkpoint = test_checkpoint(spec.name)
    metadata = model_metadata(spec, checkpoint)
    frames = moving_objects_video(TEST_FRAMES)
    networks = TorchVideoNetworks(checkpoint, spec.name, "cpu", "fp32")
    masks, _ = track_masks(networks, metadata, frames, TEST_OBJECTS)
    fractions = masks.mean(axis=(2, 3))
    # the comparison means something only if every object has a mask, and not the whole frame
    # (the random test weights give large masks: a quarter to nearly all of the frame)
    assert ((fractions > 0.001) & (fractions < 0.99)).all(), fractions
    return checkpoint, metadata, frames, networks, masks


@pytest.mark.slow
@pytest.mark.parametrize("precision", REDUCED_PRECISIONS)
def test_reduced_precision_within_bound(fp32_run, precision):
    from sam2_triton.python_backend.video.networks import TorchVideoNetworks

    checkpoint, metadata, frames, fp32, reference_masks = fp32_run
    reason = skip_reason(precision, fp32.device)
    if reason is not None:
        pytest.skip(reason)
    bound = PRECISION_BOUNDS[precision]
    networks = TorchVideoNetworks(checkpoint, "tiny", "cpu", precision)
    try:
        errors = network_errors(fp32, networks, seeds=(0,))
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"{precision} autocast has no CPU kernel here: {exc}")
    worst = max(max(outputs.values()) for outputs in errors.values())
    print(f"\n{precision}: relative error per network {errors}")
    assert worst <= bound.max_relative_error, errors
    assert worst > FP32_TOLERANCE, f"{precision} did not run in reduced precision: {errors}"

    masks, seconds = track_masks(networks, metadata, frames, TEST_OBJECTS)
    ious = mask_ious(reference_masks, masks)
    print(f"{precision}: {seconds:.2f} s/frame; IoU per frame (objects 1-3):\n{ious.round(5)}")
    assert bound.min_mask_iou is not None
    assert ious.min() >= bound.min_mask_iou, ious
    assert np.isfinite(ious).all()
