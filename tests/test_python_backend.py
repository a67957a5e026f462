"""Plain serving functions (no server): prompt conversion, token choice, embedding cache,
image limits, and the PyTorch network runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_triton.configs import RequestLimits, get_profile
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.embedding_cache import EmbeddingCache
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.images import check_raw_image, decode_image, preprocess_image
from sam2_triton.python_backend.masks import TokenChoice, select_masks
from sam2_triton.python_backend.prompts import prepare_prompts

LIMITS = RequestLimits.for_profile(get_profile("cpu"))


def test_prompts_scale_to_model_space_and_put_box_corners_first():
    prompts = prepare_prompts(
        (480, 640),
        LIMITS,
        point_coords=np.array([[[320, 240]]], np.float32),
        point_labels=np.array([[1]], np.int32),
        boxes=np.array([[64, 48, 640, 480]], np.float32),
    )
    np.testing.assert_allclose(
        prompts.point_coords, [[[102.4, 102.4], [1024, 1024], [512, 512]]], rtol=1e-6
    )
    assert prompts.point_labels.tolist() == [[2, 3, 1]]
    assert prompts.has_mask_input.tolist() == [0.0] and not prompts.mask_input.any()


def test_prompts_with_mask_input_flag_it():
    mask = np.full((2, 1, 256, 256), 3.0, np.float32)
    prompts = prepare_prompts(
        (100, 100),
        LIMITS,
        boxes=np.array([[0, 0, 50, 50], [10, 10, 90, 90]], np.float32),
        mask_input=mask,
    )
    assert prompts.has_mask_input.tolist() == [1.0, 1.0] and prompts.mask_input is mask


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(point_coords=np.zeros((1, 1, 2), np.float32)), "without POINT_LABELS"),
        (
            dict(
                boxes=np.zeros((2, 4), np.float32),
                point_coords=np.zeros((3, 1, 2), np.float32),
                point_labels=np.ones((3, 1), np.int32),
            ),
            "prompt counts differ",
        ),
        (dict(boxes=np.zeros((1, 5), np.float32)), "BOXES must be"),
        (
            dict(
                point_coords=np.zeros((1, 0, 2), np.float32),
                point_labels=np.zeros((1, 0), np.int32),
            ),
            "0 points",
        ),
        (
            dict(
                point_coords=np.full((1, 1, 2), -60.0, np.float32),
                point_labels=np.ones((1, 1), np.int32),
            ),
            "far outside",
        ),
        (
            dict(
                boxes=np.zeros((1, 4), np.float32), mask_input=np.zeros((1, 1, 64, 64), np.float32)
            ),
            "MASK_INPUT must be",
        ),
    ],
)
def test_prompt_errors_name_the_problem(kwargs, message):
    with pytest.raises(InputError, match=message):
        prepare_prompts((100, 100), LIMITS, **kwargs)


def test_points_just_outside_the_image_are_accepted():
    prompts = prepare_prompts(
        (100, 100),
        LIMITS,
        point_coords=np.array([[[-49.0, 149.0]]], np.float32),
        point_labels=np.array([[1]], np.int32),
    )
    assert prompts.num_prompts == 1


def test_single_mask_choice_matches_the_reference_decoder(exported):
    """select_masks(multimask=False) == MaskDecoder._dynamic_multimask_via_stability."""
    decoder = exported.model.sam_mask_decoder
    choice = TokenChoice.from_metadata(load_metadata(exported.directory)["decoder"])
    assert choice.dynamic_multimask_via_stability
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (6, 4, 32, 32)).astype(np.float32)
    logits[:3, 0] *= 0.01  # unstable single-mask token: falls back to the best multimask token
    logits[3:, 0] = np.sign(logits[3:, 0]) * 50  # stable
    iou = rng.random((6, 4)).astype(np.float32)
    ours_masks, ours_iou = select_masks(logits, iou, False, choice)
    ref_masks, ref_iou = decoder._dynamic_multimask_via_stability(
        torch.from_numpy(logits), torch.from_numpy(iou)
    )
    np.testing.assert_array_equal(ours_masks, ref_masks.numpy())
    np.testing.assert_array_equal(ours_iou, ref_iou.numpy())
    multi_masks, multi_iou = select_masks(logits, iou, True, choice)
    assert multi_masks.shape == (6, 3, 32, 32) and np.array_equal(multi_iou, iou[:, 1:])


class Blob:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def test_embedding_cache_is_bounded_in_bytes_and_evicts_least_recently_used():
    cache = EmbeddingCache(max_bytes=100)
    first, second = cache.add(Blob(40)), cache.add(Blob(40))
    cache.get(first)  # now `second` is the least recently used
    third = cache.add(Blob(40))
    assert cache.nbytes == 80 and len(cache) == 2 and cache.evictions == 1
    assert first in cache and third in cache and second not in cache
    with pytest.raises(InputError, match="unknown IMAGE_ID"):
        cache.get(second)
    assert cache.release(first).nbytes == 40 and cache.nbytes == 40
    assert cache.release(first) is None
    with pytest.raises(InputError, match="more than the whole embedding cache"):
        cache.add(Blob(101))


def test_embedding_cache_ids_are_unguessable_and_unique():
    cache = EmbeddingCache(max_bytes=10**6)
    ids = {cache.add(Blob(1)) for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 32 for i in ids)


def test_image_limits():
    with pytest.raises(InputError, match="IMAGE is empty"):
        decode_image(b"", 100, 100)
    with pytest.raises(InputError, match="more than the limit of 10"):
        decode_image(b"x" * 11, 10, 100)
    with pytest.raises(InputError, match="could not be decoded"):
        decode_image(b"GIF89a but not really", 1000, 100)
    with pytest.raises(InputError, match="uint8"):
        check_raw_image(np.zeros((4, 4, 3), np.float32), 100)
    with pytest.raises(InputError, match="more than the limit of 15"):
        check_raw_image(np.zeros((4, 4, 3), np.uint8), 15)


def test_preprocessing_equals_sam2_transforms():
    from sam2.utils.transforms import SAM2Transforms

    for height, width in ((300, 1000), (1500, 1100)):  # upscaling and (antialiased) downscaling
        image = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours, size = preprocess_image(image)
        reference = SAM2Transforms(1024, 0.0)(image)[None].numpy()
        assert size == (height, width)
        np.testing.assert_array_equal(ours, reference)


def test_torch_runner_equals_onnx_runner(exported):
    from sam2_triton.export.contract import CONTRACTS
    from sam2_triton.export.sample_inputs import random_inputs
    from sam2_triton.python_backend.onnx_networks import OnnxNetworks
    from sam2_triton.python_backend.torch_networks import TorchNetworks

    inputs = random_inputs(
        CONTRACTS["mask_decoder"],
        {"num_images": 1, "num_prompts": 2, "num_points": 3},
        np.random.default_rng(1),
    )
    ours = TorchNetworks(exported.checkpoint, exported.spec.name, ["mask_decoder"], "cpu").run(
        "mask_decoder", **inputs
    )
    onnx = OnnxNetworks(exported.directory, ["mask_decoder"]).run("mask_decoder", **inputs)
    for name, value in onnx.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-4, atol=1e-4, err_msg=name)


def test_mask_bounds_are_inclusive_and_convert_to_pixel_edges():
    from sam2_triton.python_backend.boxes import mask_bounds, mask_edge_box, pixel_edges

    masks = np.zeros((3, 6, 8), bool)
    masks[0, 5, 3] = True  # one pixel: row 5, column 3
    masks[1, 1:4, 2:7] = True
    bounds, present = mask_bounds(masks)
    assert bounds.dtype == np.int64 and present.tolist() == [True, True, False]
    assert bounds.tolist() == [[3, 5, 3, 5], [2, 1, 6, 3], [0, 0, 0, 0]]  # empty: zeros
    edges = pixel_edges(bounds[:2])
    assert edges.dtype == np.float64 and edges.tolist() == [[3, 5, 4, 6], [2, 1, 7, 4]]
    assert mask_edge_box(masks[1]).tolist() == [2, 1, 7, 4] and mask_edge_box(masks[2]) is None
    assert mask_bounds(np.zeros((0, 4, 4), bool))[0].shape == (0, 4)
    none, absent = mask_bounds(np.zeros((2, 0, 4), bool))
    assert none.tolist() == [[0, 0, 0, 0]] * 2 and absent.tolist() == [False, False]


class _StandInImageNetworks:
    """Instant image networks on `device`: features of the contract's shapes, decoder logits
    that are the prompt's first x coordinate everywhere (so answers differ per prompt)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.calls: list[dict[str, torch.device]] = []

    def encode(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append({"image": image.device})
        zeros = lambda *shape: torch.zeros(shape, device=self.device)  # noqa: E731
        return {
            "image_embed": zeros(1, 256, 64, 64),
            "high_res_feats_0": zeros(1, 32, 256, 256),
            "high_res_feats_1": zeros(1, 64, 128, 128),
        }

    def decode(self, inputs):
        self.calls.append({name: tensor.device for name, tensor in inputs.items()})
        x = inputs["point_coords"][:, 0, 0].reshape(-1, 1, 1, 1) - 100.0
        prompts = x.shape[0]
        return {
            "masks": x.expand(prompts, 4, 256, 256).contiguous(),
            "iou_scores": torch.arange(4.0, device=self.device).expand(prompts, 4).contiguous(),
        }


def test_image_predictor_keeps_embeddings_on_its_device_and_moves_only_the_answer():
    """The interactive path on a device: the EncodedImage (what the cache holds) is device
    memory counted in bytes, every network input is on the device, and an answer crosses to the
    host in three transfers however many prompts it has."""
    from sam2_triton.python_backend.image_predictor import ImagePredictor

    device = torch.device("cpu")
    networks = _StandInImageNetworks(device)
    metadata = {
        "settings": {"directly_add_no_mem_embed": True},
        "constants": {"no_mem_embed": [[[0.5] * 256]]},
        "decoder": {
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
    }
    predictor = ImagePredictor(networks, metadata)
    assert predictor.device == device
    encoded = predictor.encode(np.zeros((48, 64, 3), np.uint8))
    features = encoded.features()
    assert all(isinstance(t, torch.Tensor) and t.device == device for t in features.values())
    assert torch.equal(encoded.image_embed, torch.full((1, 256, 64, 64), 0.5))
    assert encoded.nbytes == 4 * (256 * 64 * 64 + 32 * 256 * 256 + 64 * 128 * 128)
    cache = EmbeddingCache(2 * encoded.nbytes)
    assert cache.get(cache.add(encoded)) is encoded and cache.nbytes == encoded.nbytes

    for count in (1, 5):
        predictor.transfers.reset()
        prompts = prepare_prompts(
            (48, 64),
            LIMITS,
            point_coords=np.array([[[10.0 * i, 5.0]] for i in range(count)], np.float32),
            point_labels=np.ones((count, 1), np.int32),
        )
        prediction = predictor.predict(encoded, prompts, multimask_output=True)
        assert predictor.transfers.count == 3
        assert prediction.masks.shape == (count, 3, 48, 64)
        assert all(d == device for d in networks.calls[-1].values())
        # logits = model-space x - 100: prompts beyond x = 100 (model space) are foreground
        expected = prompts.point_coords[:, 0, 0] > 100.0
        assert prediction.masks.all(axis=(1, 2, 3)).tolist() == expected.tolist()
        np.testing.assert_array_equal(prediction.scores, np.tile([1.0, 2.0, 3.0], (count, 1)))
