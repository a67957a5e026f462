"""The automatic mask generator against the official `SAM2AutomaticMaskGenerator`.

End to end, the reference runs the PyTorch model of the test checkpoint and ours runs its ONNX
export, on the same synthetic image. The test weights are random: their mask logits are faint
(mostly within +-0.6) and their predicted IoUs lie in 0.47-0.56, so the reference defaults
would keep nothing. FILTERS are chosen for these weights: each run keeps a handful of masks
(4 to 8 with the tiny test checkpoint), and every candidate stays clear of each cut-off
(predicted IoU >= 7e-4 from pred_iou_thresh, stability >= 0.03 from stability_score_thresh,
box overlaps >= 1e-3 from the NMS thresholds, boxes >= 14 px from the crop-edge tolerance),
so ONNX-vs-PyTorch rounding cannot flip a decision.

The helpers (crop boxes, point grids, stability, boxes, edge test, RLE) are also compared with
the reference's own functions on random inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from sam2 import automatic_mask_generator as reference_amg
from sam2.utils import amg as reference_utils

from sam2_triton.configs import load_serving_settings
from sam2_triton.errors import ConfigError
from sam2_triton.python_backend.automatic_masks import (
    AutomaticMaskGenerator,
    GeneratedMasks,
    GeneratorSettings,
    crop_boxes,
    mask_boxes,
    mask_stability,
    near_inner_crop_edge,
    point_grid,
)
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.image_predictor import ImagePredictor, OnnxImageNetworks
from sam2_triton.rle import area as rle_area
from sam2_triton.rle import decode as decode_rle
from sam2_triton.rle import encode_masks

IMAGE_SIZE = (320, 480)  # (H, W) of the synthetic image
FILTERS = dict(
    pred_iou_thresh=0.5,
    stability_score_thresh=0.7,
    stability_score_offset=0.02,
    mask_threshold=0.3,
    box_nms_thresh=0.8,
)
MIN_MASK_IOU = 0.99
MAX_PREDICTED_IOU_DIFF = 1e-3
MAX_STABILITY_DIFF = 0.01
MAX_BOX_DIFF_PX = 1.0
MAX_POINT_DIFF_PX = 1e-3
MAX_POINTS_PER_SIDE = 128
MAX_CROP_N_LAYERS = 3


def synthetic_image() -> np.ndarray:
    """RGB uint8 [320, 480, 3]: colour gradients under a disc, two rectangles and a triangle."""
    height, width = IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [x / width * 200, y / height * 150 + 50, (x + y) / (height + width) * 100], axis=-1
    )
    image[(x - 120) ** 2 + (y - 110) ** 2 < 60**2] = (230, 40, 40)
    image[(y > 180) & (y < 290) & (x > 260) & (x < 420)] = (30, 200, 60)
    image[(y > 40) & (y < 140) & (x > 300) & (x < 440) & (x - 300 > (140 - y) * 0.8)] = (
        20,
        30,
        220,
    )
    image[(y > 220) & (y < 300) & (x > 40) & (x < 200)] = (250, 250, 250)
    return np.clip(image, 0, 255).astype(np.uint8)


# --- end to end against the reference -------------------------------------------------------


def _key(array: np.ndarray) -> tuple:
    array = np.ascontiguousarray(array)
    return array.shape, str(array.dtype), hashlib.sha256(array.tobytes()).hexdigest()


class CachingPredictor:
    """A predictor that remembers its encodings: the whole image is encoded by every end-to-end
    test (encoding is deterministic). Also shows the generator takes any object with `encode`
    and `decode_logits`."""

    def __init__(self, predictor: ImagePredictor) -> None:
        self.predictor = predictor
        self.token_choice = predictor.token_choice
        self.encodings = {}

    def encode(self, image: np.ndarray):
        key = _key(image)
        if key not in self.encodings:
            self.encodings[key] = self.predictor.encode(image)
        return self.encodings[key]

    def decode_logits(self, encoded, prompts):
        return self.predictor.decode_logits(encoded, prompts)


@pytest.fixture(scope="module")
def predictor(exported) -> CachingPredictor:
    networks = OnnxImageNetworks(exported.directory)
    return CachingPredictor(ImagePredictor(networks, networks.metadata))


@pytest.fixture(scope="module")
def reference_model(exported):
    """The official model, its image encoder (`forward_image`) remembering its answers in this
    module, like `predictor`."""
    model = exported.model
    encode = model.forward_image
    encodings = {}

    def remembered(pixels: torch.Tensor) -> dict:
        key = _key(pixels.numpy())
        if key not in encodings:
            encodings[key] = encode(pixels)
        return encodings[key]

    model.forward_image = remembered
    yield model
    del model.forward_image


def generate_both(reference_model, predictor, **settings):
    """(reference records, our GeneratedMasks) for the synthetic image."""
    image = synthetic_image()
    reference = reference_amg.SAM2AutomaticMaskGenerator(
        reference_model, output_mode="coco_rle", **settings
    ).generate(image)
    ours = AutomaticMaskGenerator(predictor, GeneratorSettings(**settings)).generate(image)
    return reference, ours


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def assert_well_formed(ours: GeneratedMasks) -> None:
    count = len(ours)
    assert ours.original_size == IMAGE_SIZE
    for name, dtype, shape in [
        ("boxes", np.float32, (count, 4)),
        ("areas", np.int64, (count,)),
        ("predicted_ious", np.float32, (count,)),
        ("stability_scores", np.float32, (count,)),
        ("point_coords", np.float32, (count, 2)),
        ("crop_boxes", np.float32, (count, 4)),
    ]:
        array = getattr(ours, name)
        assert array.dtype == dtype and array.shape == shape, (name, array.dtype, array.shape)
    assert all(
        rle["size"] == list(IMAGE_SIZE) and isinstance(rle["counts"], str) for rle in ours.rles
    )


def assert_same_masks(reference: list, ours: GeneratedMasks) -> None:
    """Same number of masks, and mask i of ours matches mask i of the reference."""
    assert_well_formed(ours)
    records = ours.to_records()
    assert len(records) == len(reference), (len(records), len(reference))
    for i, (want, got) in enumerate(zip(reference, records)):
        assert set(got) == set(want), i
        iou = mask_iou(decode_rle(got["segmentation"]), decode_rle(want["segmentation"]))
        assert iou >= MIN_MASK_IOU, (i, iou)
        assert abs(got["predicted_iou"] - want["predicted_iou"]) <= MAX_PREDICTED_IOU_DIFF, i
        assert abs(got["stability_score"] - want["stability_score"]) <= MAX_STABILITY_DIFF, i
        np.testing.assert_allclose(got["bbox"], want["bbox"], rtol=0, atol=MAX_BOX_DIFF_PX)
        np.testing.assert_allclose(
            got["point_coords"], want["point_coords"], rtol=0, atol=MAX_POINT_DIFF_PX
        )
        assert got["crop_box"] == want["crop_box"], i
        assert abs(got["area"] - want["area"]) <= (1 - MIN_MASK_IOU) * want["area"], i
        assert got["area"] == rle_area(got["segmentation"])


def test_matches_reference_on_the_whole_image(reference_model, predictor):
    reference, ours = generate_both(reference_model, predictor, points_per_side=6, **FILTERS)
    assert len(reference) > 0, "FILTERS keep no mask: the comparison would be empty"
    assert_same_masks(reference, ours)


def test_matches_reference_with_a_crop_layer(reference_model, predictor):
    """crop_n_layers=1: the image and 4 overlapping crops, each encoded and decoded."""
    reference, ours = generate_both(
        reference_model,
        predictor,
        points_per_side=4,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        **FILTERS,
    )
    whole_image = [0.0, 0.0, float(IMAGE_SIZE[1]), float(IMAGE_SIZE[0])]
    assert any(r["crop_box"] != whole_image for r in reference), (
        "no mask comes from a crop: the crop path would go untested"
    )
    assert_same_masks(reference, ours)


def test_matches_reference_with_single_mask_and_m2m(reference_model, predictor):
    """multimask_output=False (token 0 or the stability-based choice) and use_m2m refinement."""
    reference, ours = generate_both(
        reference_model,
        predictor,
        points_per_side=4,
        multimask_output=False,
        use_m2m=True,
        **FILTERS,
    )
    assert len(reference) > 0, "FILTERS keep no mask: the comparison would be empty"
    assert_same_masks(reference, ours)


# --- helpers against the reference's ----------------------------------------------------------


@pytest.mark.parametrize("size", [(320, 480), (1500, 1000), (37, 29), (64, 64)])
@pytest.mark.parametrize("n_layers", [0, 1, 3])
@pytest.mark.parametrize("overlap", [512 / 1500, 0.0, 0.9])
def test_crop_boxes_match_reference(size, n_layers, overlap):
    boxes, layers = reference_utils.generate_crop_boxes(size, n_layers, overlap)
    assert crop_boxes(size, n_layers, overlap) == [
        (tuple(box), layer) for box, layer in zip(boxes, layers)
    ]


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_point_grid_matches_reference(n):
    np.testing.assert_array_equal(point_grid(n), reference_utils.build_point_grid(n))


def test_stability_matches_reference():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, 50, generator=generator)
    logits[0] = -5.0  # empty union: NaN in both
    for threshold, offset in [(0.0, 1.0), (0.3, 0.02), (-0.2, 0.5)]:
        want = reference_utils.calculate_stability_score(logits, threshold, offset)
        got = mask_stability(logits, threshold, offset)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)


def random_masks(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """bool [count, H, W] blobs of several densities, with one empty and one full mask."""
    rng = np.random.default_rng(seed)
    masks = rng.random((count, height, width)) < rng.random((count, 1, 1))
    masks[0] = False
    masks[-1] = True
    return masks


def test_mask_boxes_match_reference():
    masks = torch.from_numpy(random_masks(8, 23, 31, seed=1))
    masks[3] = False
    masks[3, 5:9, 11:12] = True
    torch.testing.assert_close(
        mask_boxes(masks), reference_utils.batched_mask_to_box(masks), rtol=0, atol=0
    )


def test_mask_boxes_are_coco_boxes_less_one_pixel():
    masks = random_masks(6, 17, 13, seed=2)[1:]
    coco = coco_mask.toBbox(
        coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    )
    ours = mask_boxes(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(ours[:, :2], coco[:, :2])
    np.testing.assert_array_equal(ours[:, 2:] - ours[:, :2] + 1, coco[:, 2:])


def test_near_inner_crop_edge_matches_reference():
    rng = np.random.default_rng(3)
    corners = np.sort(rng.integers(0, 500, size=(200, 2, 2)), axis=1)
    boxes = torch.from_numpy(corners.transpose(0, 2, 1).reshape(-1, 4)[:, [0, 2, 1, 3]])
    image_size = (400, 500)
    for crop in [(0, 0, 500, 400), (100, 0, 400, 300), (180, 120, 500, 400)]:
        crop_frame = boxes - torch.tensor([crop[0], crop[1], crop[0], crop[1]])
        want = reference_utils.is_box_near_crop_edge(crop_frame, list(crop), [0, 0, 500, 400])
        assert torch.equal(near_inner_crop_edge(boxes, crop, image_size), want), crop


def test_rle_round_trip_matches_pycocotools():
    masks = random_masks(5, 19, 11, seed=4)
    rles = encode_masks(masks)
    assert len(rles) == len(masks)
    for mask, rle in zip(masks, rles):
        assert rle["size"] == [19, 11] and isinstance(rle["counts"], str)
        native = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle["counts"] == native["counts"].decode("ascii")
        decoded = decode_rle(rle)
        assert decoded.dtype == bool
        np.testing.assert_array_equal(decoded, mask)
        assert rle_area(rle) == int(mask.sum())
    assert encode_masks(np.zeros((0, 4, 4), dtype=bool)) == []


def test_rle_matches_reference_coco_rle():
    masks = random_masks(4, 9, 14, seed=5)
    uncompressed = reference_utils.mask_to_rle_pytorch(torch.from_numpy(masks))
    assert encode_masks(masks) == [reference_utils.coco_encode_rle(rle) for rle in uncompressed]


# --- settings ----------------------------------------------------------------------------------


def serving_defaults() -> dict:
    return load_serving_settings()["automatic_mask_generator"]


def settings_from(overrides: dict) -> GeneratorSettings:
    return GeneratorSettings.from_mapping(
        serving_defaults(), overrides, MAX_POINTS_PER_SIDE, MAX_CROP_N_LAYERS
    )


def test_default_settings_are_the_reference_defaults():
    parameters = inspect.signature(reference_amg.SAM2AutomaticMaskGenerator.__init__).parameters
    for field in dataclasses.fields(GeneratorSettings):
        assert field.default == parameters[field.name].default, field.name
    assert settings_from({}) == GeneratorSettings()


def test_overrides_accept_numpy_scalars_and_one_element_arrays():
    settings = settings_from(
        {
            "points_per_side": np.array([16], dtype=np.int32),
            "pred_iou_thresh": np.float32(0.7),
            "crop_n_layers": 1,
            "use_m2m": np.bool_(True),
        }
    )
    assert settings.points_per_side == 16 and isinstance(settings.points_per_side, int)
    assert settings.pred_iou_thresh == 0.7  # the float32 value's decimal, not 0.699999988
    assert settings.crop_n_layers == 1 and settings.use_m2m is True
    assert settings.points_per_batch == GeneratorSettings().points_per_batch


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"points_per_side": 0}, "points_per_side must be >= 1"),
        ({"points_per_side": MAX_POINTS_PER_SIDE + 1}, "points_per_side must be in 1..128"),
        ({"points_per_side": 2.5}, "points_per_side must be an integer"),
        ({"points_per_batch": 0}, "points_per_batch must be >= 1"),
        ({"pred_iou_thresh": 1.5}, r"pred_iou_thresh must be in \[0, 1\]"),
        ({"stability_score_thresh": -0.1}, r"stability_score_thresh must be in \[0, 1\]"),
        ({"box_nms_thresh": math.nan}, "box_nms_thresh must be finite"),
        ({"crop_nms_thresh": math.inf}, "crop_nms_thresh must be finite"),
        ({"crop_overlap_ratio": 1.0}, r"crop_overlap_ratio must be in \[0, 1\)"),
        ({"crop_n_layers": MAX_CROP_N_LAYERS + 1}, "crop_n_layers must be in 0..3"),
        ({"crop_n_layers": -1}, "crop_n_layers must be >= 0"),
        ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor must be >= 1"),
        (
            {"points_per_side": 4, "crop_n_layers": 3, "crop_n_points_downscale_factor": 2},
            "leaves no points in crop layer 3",
        ),
        ({"stability_score_offset": -1.0}, "stability_score_offset must be >= 0"),
        ({"mask_threshold": math.nan}, "mask_threshold must be finite"),
        ({"pred_iou_thresh": "high"}, "pred_iou_thresh must be a number"),
        ({"use_m2m": 1}, "use_m2m must be true or false"),
        ({"points_per_grid": 8}, "unknown setting 'points_per_grid'"),
        ({"min_mask_region_area": 100}, "'min_mask_region_area' is not supported: .*OpenCV"),
        ({"output_mode": "binary_mask"}, "'output_mode' is not supported"),
        ({"point_grids": [np.zeros((4, 2))]}, "'point_grids' is not supported"),
    ],
)
def test_bad_settings_are_rejected_by_name(overrides, message):
    with pytest.raises(InputError, match=message):
        settings_from(overrides)


def test_direct_construction_is_validated():
    with pytest.raises(InputError, match=r"box_nms_thresh must be in \[0, 1\]"):
        GeneratorSettings(box_nms_thresh=2.0)


def test_unknown_default_is_a_config_error():
    with pytest.raises(ConfigError, match="points_per_grid"):
        GeneratorSettings.from_mapping(
            {"points_per_grid": 8}, {}, MAX_POINTS_PER_SIDE, MAX_CROP_N_LAYERS
        )


class _NoNetworks:
    """A predictor that must not be called."""

    def encode(self, image):
        raise AssertionError("encode called")

    def decode_logits(self, encoded, prompts):
        raise AssertionError("decode_logits called")


@pytest.mark.parametrize(
    "image,message",
    [
        (np.zeros((8, 8, 3), dtype=np.float32), "uint8"),
        (np.zeros((8, 8), dtype=np.uint8), r"\[height, width, 3\]"),
        (np.zeros((0, 8, 3), dtype=np.uint8), r"\[height, width, 3\]"),
    ],
)
def test_bad_images_are_rejected(image, message):
    with pytest.raises(InputError, match=message):
        AutomaticMaskGenerator(_NoNetworks(), GeneratorSettings()).generate(image)


def test_an_image_too_small_for_the_crop_layers_is_rejected():
    generator = AutomaticMaskGenerator(_NoNetworks(), GeneratorSettings(crop_n_layers=3))
    with pytest.raises(InputError, match="5x5 image is too small for crop layer 2"):
        generator.generate(np.zeros((5, 5, 3), dtype=np.uint8))


def test_single_mask_decoding_needs_a_token_choice():
    with pytest.raises(ValueError, match="TokenChoice"):
        AutomaticMaskGenerator(_NoNetworks(), GeneratorSettings(multimask_output=False))
