"""Served automatic masks equal SAM2AutomaticMaskGenerator on the same image and weights.

Thresholds: the random test weights give faint logits and predicted IoUs near 0.5, so the
defaults keep nothing; these settings keep a non-trivial number of masks with every candidate
clear of the cut-offs (see tests/test_automatic_masks.py, which checks the same algorithm
in-process with more settings).
"""

from __future__ import annotations

import numpy as np
from test_automatic_masks import FILTERS, synthetic_image
from test_serving_parity import synthetic_image as small_image

from sam2_triton.client import Sam2Client

SETTINGS = dict(points_per_side=6, **FILTERS)


def test_served_automatic_masks_equal_reference(served):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    image = synthetic_image()
    reference = SAM2AutomaticMaskGenerator(
        served.exported.model, output_mode="binary_mask", **SETTINGS
    )
    expected = reference.generate(image)
    served_masks = Sam2Client(served.grpc_url, "grpc").generate_masks(image, **SETTINGS)
    assert len(expected) >= 3, "test weights and thresholds should keep several masks"
    assert len(served_masks) == len(expected)
    for ours, ref in zip(served_masks, expected):
        mask = ours.segmentation
        inter = np.logical_and(mask, ref["segmentation"]).sum()
        union = np.logical_or(mask, ref["segmentation"]).sum()
        assert inter / union >= 0.99
        assert abs(ours.predicted_iou - ref["predicted_iou"]) <= 1e-3
        np.testing.assert_allclose(ours.bbox, ref["bbox"], atol=1)
        assert ours.area == ref["area"] or abs(ours.area - ref["area"]) <= 0.01 * ref["area"]
        np.testing.assert_allclose(
            np.ravel(ours.point_coords), np.ravel(ref["point_coords"]), atol=1e-3
        )


def test_bad_generator_setting_is_rejected(served):
    import pytest

    from sam2_triton.client.errors import Sam2ClientError

    with pytest.raises(Sam2ClientError, match="pred_iou_thresh"):
        Sam2Client(served.http_url).generate_masks(small_image(64, 64, seed=1), pred_iou_thresh=1.5)
    with pytest.raises(Sam2ClientError, match="points_per_side"):
        Sam2Client(served.http_url).generate_masks(
            small_image(64, 64, seed=1), points_per_side=100000
        )
