"""python_backend/triton_io.py over the pb_utils stand-in (tests/triton_stub.py), no server:
reading inputs, one response per request with the right error code, BLS calls."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
import triton_stub as pb_utils
from triton_stub import answer_with, outputs, request

from sam2_triton.configs import RequestLimits, get_profile
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.python_backend.errors import InputError

triton_io = pb_utils.import_glue()
LIMITS = RequestLimits.for_profile(get_profile("cpu"))


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def image_rgb(height: int = 12, width: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(data: bytes) -> np.ndarray:
    """A BYTES [1] tensor."""
    return np.array([data], dtype=np.object_)


def encoded_png(image: np.ndarray) -> np.ndarray:
    """IMAGE as clients send it: BYTES [1] holding a PNG."""
    return encoded(png(image))


# -- reading inputs ----------------------------------------------------------------------------


def test_optional_and_required_inputs():
    req = request(A=np.arange(3, dtype=np.int32))
    assert triton_io.optional_input(req, "B") is None
    assert triton_io.required_input(req, "A").tolist() == [0, 1, 2]
    with pytest.raises(InputError, match="^input B is required$"):
        triton_io.required_input(req, "B")


def test_scalars_by_kind():
    req = request(
        FLAG=np.array([True]),
        COUNT=np.array([[7]], np.int32),
        THRESH=np.array([0.25], np.float32),
        NAME=encoded(b"img-3"),
        TWO=np.array([1.0, 2.0], np.float32),
        NAN=np.array([np.nan], np.float32),
    )
    assert triton_io.scalar(req, "FLAG", False, bool) is True
    count = triton_io.scalar(req, "COUNT", 0, int)
    assert count == 7 and type(count) is int
    assert triton_io.scalar(req, "THRESH", 0.0, float) == 0.25
    assert triton_io.scalar(req, "NAME", None, str) == "img-3"
    assert triton_io.scalar(req, "ABSENT", "default", str) == "default"
    with pytest.raises(InputError, match=r"TWO must hold exactly one value, got shape \[2\]"):
        triton_io.scalar(req, "TWO", 0.0, float)
    with pytest.raises(InputError, match="NAN is nan: must be finite"):
        triton_io.scalar(req, "NAN", 0.0, float)


def test_image_encoded_or_raw_gives_the_same_pixels():
    image = image_rgb()
    from_png = triton_io.read_image(request(IMAGE=encoded_png(image)), LIMITS)
    from_raw = triton_io.read_image(request(IMAGE_RAW=image), LIMITS)
    assert from_png.dtype == np.uint8 and np.array_equal(from_png, image)
    assert np.array_equal(from_raw, image)
    # a client may send BYTES as np.bytes_: the receiver still gets bytes
    assert np.array_equal(
        triton_io.read_image(request(IMAGE=np.array([png(image)], np.bytes_)), LIMITS), image
    )


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({}, "send exactly one of IMAGE .encoded bytes. and IMAGE_RAW"),
        ({"IMAGE": "png", "IMAGE_RAW": "raw"}, "IMAGE and IMAGE_RAW were both sent: send one"),
        ({"IMAGE": "two"}, "IMAGE must hold exactly one encoded image, got 2 elements"),
        ({"IMAGE_RAW": "gray"}, r"IMAGE_RAW must be \[height, width, 3\] RGB"),
    ],
)
def test_image_mistakes(inputs, message):
    image = image_rgb()
    values = {
        "png": encoded_png(image),
        "two": np.array([png(image), png(image)], np.object_),
        "raw": image,
        "gray": image[..., 0],
    }
    req = request(**{name: values[key] for name, key in inputs.items()})
    with pytest.raises(InputError, match=message):
        triton_io.read_image(req, LIMITS)


def test_optional_image():
    assert triton_io.read_optional_image(request(), LIMITS) is None
    assert triton_io.read_optional_image(request(IMAGE_RAW=image_rgb()), LIMITS).shape == (
        12,
        20,
        3,
    )


def test_sequence_controls_as_triton_sends_them():
    """The request's correlation id (int or str), START / END fp32_false_true (track_video)."""

    def sequence_request(correlation_id, start=1.0, end=0.0):
        controls = {"START": np.array([start], np.float32), "END": np.array([end], np.float32)}
        return pb_utils.InferenceRequest(
            inputs=[pb_utils.Tensor(name, array) for name, array in controls.items()],
            correlation_id=correlation_id,
        )

    assert triton_io.sequence_controls(sequence_request(2**64 - 1)) == (2**64 - 1, True, False)
    assert triton_io.sequence_controls(sequence_request("video-a", 0.0, 1.0)) == (
        "video-a",
        False,
        True,
    )
    with pytest.raises(InputError, match="string sequence ids must have 1..128 bytes"):
        triton_io.sequence_controls(sequence_request("v" * 129))
    with pytest.raises(InputError, match="input END is required"):
        triton_io.sequence_controls(
            pb_utils.InferenceRequest(
                inputs=[pb_utils.Tensor("START", np.ones(1, np.float32))], correlation_id=3
            )
        )


def test_prompts_are_read_against_the_image_size():
    assert not triton_io.has_prompts(request(IMAGE_RAW=image_rgb()))
    req = request(
        POINT_COORDS=np.array([[[10.0, 6.0]]], np.float32),
        POINT_LABELS=np.array([[1]], np.int32),
    )
    assert triton_io.has_prompts(req)
    prompts = triton_io.read_prompts(req, np.array([12, 20], np.int32), LIMITS)
    coords = prompts.as_decoder_inputs()["point_coords"]
    assert coords.shape[:2] == (1, 1)
    np.testing.assert_allclose(coords[0, 0], [10.0 * 1024 / 20, 6.0 * 1024 / 12])
    far = request(
        POINT_COORDS=np.array([[[500.0, 6.0]]], np.float32),
        POINT_LABELS=np.array([[1]], np.int32),
    )
    with pytest.raises(InputError, match="POINT_COORDS"):
        triton_io.read_prompts(far, (12, 20), LIMITS)


def test_model_parameters_are_the_configs_string_values():
    config = {
        "name": "m",
        "parameters": {"a": {"string_value": "1"}, "b": {"string_value": '{"x": 2}'}},
    }
    assert triton_io.model_parameters({"model_config": json.dumps(config)}) == {
        "a": "1",
        "b": '{"x": 2}',
    }
    assert triton_io.model_parameters({"model_config": json.dumps({"name": "m"})}) == {}


# -- responses ---------------------------------------------------------------------------------


def test_response_carries_every_output():
    strided = np.arange(12, dtype=np.float32).reshape(3, 4).T  # not C-contiguous
    result = outputs(triton_io.response({"X": strided, "ID": encoded(b"k")}))
    assert list(result) == ["X", "ID"]
    assert np.array_equal(result["X"], strided) and result["ID"].tolist() == [b"k"]


def test_one_bad_request_fails_only_itself(caplog):
    def handle(req):
        kind = triton_io.scalar(req, "KIND", "", str)
        if kind == "bad":
            raise InputError("KIND bad is not accepted")
        if kind == "bug":
            raise ZeroDivisionError("division by zero")
        return {"ECHO": np.array([kind.encode()], np.object_)}

    requests = [request(KIND=encoded(k.encode())) for k in ("a", "bad", "bug", "b")]
    with caplog.at_level(logging.ERROR, logger="sam2_triton.model"):
        responses = triton_io.respond_each(requests, handle, "toy")
    assert len(responses) == 4
    assert outputs(responses[0])["ECHO"].tolist() == [b"a"]
    assert outputs(responses[3])["ECHO"].tolist() == [b"b"]
    bad, bug = responses[1].error(), responses[2].error()
    assert bad.code() == pb_utils.TritonError.INVALID_ARG
    assert bad.message() == "KIND bad is not accepted"
    assert bug.code() == pb_utils.TritonError.INTERNAL
    assert bug.message() == "toy: internal error: ZeroDivisionError: division by zero"
    assert not responses[1].output_tensors() and not responses[2].output_tensors()
    # the unexpected failure is logged with its traceback; the refused input is not
    assert [r.getMessage() for r in caplog.records] == ["toy: request failed"]
    assert caplog.records[0].exc_info[0] is ZeroDivisionError


# -- BLS ---------------------------------------------------------------------------------------


def test_call_model_returns_the_requested_outputs(monkeypatch):
    seen = {}

    def double(inputs):
        seen.update(inputs)
        return {"y": inputs["x"] * 2, "unasked": np.zeros(1, np.float32)}

    monkeypatch.setattr(pb_utils, "bls_handler", answer_with({"doubler": double}))
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3).T  # not contiguous
    result = triton_io.call_model_on_device("doubler", {"x": x}, ["y"], torch.device("cpu"))
    assert list(result) == ["y"] and torch.equal(result["y"], x * 2)
    assert seen["x"].flags.c_contiguous and np.array_equal(seen["x"], x.numpy())


def test_failed_bls_call_names_the_model(monkeypatch):
    def broken(inputs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pb_utils, "bls_handler", answer_with({"mask_decoder": broken}))
    with pytest.raises(
        triton_io.NetworkCallError, match="^mask_decoder: RuntimeError: out of memory$"
    ):
        triton_io.call_model_on_device(
            "mask_decoder", {"x": torch.zeros(1)}, ["y"], torch.device("cpu")
        )
    with pytest.raises(triton_io.NetworkCallError, match="'image_encoder' is not found"):
        triton_io.BlsImageNetworks().encode(torch.zeros((1, 3, 1024, 1024)))


def test_failed_bls_call_inside_a_model_is_an_internal_error(monkeypatch):
    monkeypatch.setattr(pb_utils, "bls_handler", answer_with({}))
    networks = triton_io.BlsVideoNetworks()
    [answer] = triton_io.respond_each(
        [request()],
        lambda req: networks.attend({"current_features": torch.zeros(1)}),
        "track_video",
    )
    assert answer.error().code() == pb_utils.TritonError.INTERNAL
    assert (
        answer.error()
        .message()
        .startswith("track_video: internal error: NetworkCallError: memory_attention: ")
    )


def test_bls_networks_call_the_network_models_for_contract_outputs(monkeypatch):
    """Each BLS method calls its network model and asks only for outputs that model has."""
    calls = []

    def handler(call):
        calls.append((call.model_name(), call.requested_output_names()))
        names = CONTRACTS[call.model_name()].output_names
        assert set(call.requested_output_names()) <= set(names)
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(n, np.zeros(1, np.float32)) for n in call.requested_output_names()]
        )

    monkeypatch.setattr(pb_utils, "bls_handler", handler)
    image, video = triton_io.BlsImageNetworks(), triton_io.BlsVideoNetworks()
    t = torch.zeros(1)
    image.encode(t)
    image.decode({"a": t})
    video.encode(t)
    video.decode({"a": t})
    video.encode_memory({"a": t})
    video.attend({"a": t})
    assert [name for name, _ in calls] == [
        "image_encoder",
        "mask_decoder",
        "image_encoder",
        "mask_decoder",
        "memory_encoder",
        "memory_attention",
    ]
    assert calls[0][1] == CONTRACTS["image_encoder"].output_names
    assert calls[1][1] == ["masks", "iou_scores"]
    assert set(calls[3][1]) == {"masks", "iou_scores", "object_pointers", "object_score_logits"}
    assert calls[4][1] == ["memory_features"] and calls[5][1] == ["conditioned_features"]


def test_bls_video_networks_pass_torch_tensors_by_dlpack(monkeypatch):
    """Broadcast views and int32 tensors reach the network model densely, with their values and
    dtypes; outputs come back as torch tensors on the networks' device."""
    seen = {}

    def attend(inputs):
        seen.update(inputs)
        return {"conditioned_features": inputs["current_features"] + inputs["offsets"]}

    monkeypatch.setattr(pb_utils, "bls_handler", answer_with({"memory_attention": attend}))
    networks = triton_io.BlsVideoNetworks()
    assert networks.device == torch.device("cpu")
    shared = torch.arange(6, dtype=torch.float32).reshape(1, 2, 3)
    view = shared.expand(4, 2, 3)  # stride 0 on the object axis: Triton refuses it as is
    offsets = torch.arange(4, dtype=torch.int32).reshape(4, 1, 1)
    result = networks.attend({"current_features": view, "offsets": offsets})
    assert seen["offsets"].dtype == np.int32 and seen["current_features"].shape == (4, 2, 3)
    assert np.array_equal(seen["current_features"], view.numpy())
    [features] = result.values()
    assert isinstance(features, torch.Tensor) and features.device == networks.device
    assert torch.equal(features, view + offsets)
    assert pb_utils.InferenceRequest().preferred_memory().preferred_memory_type == (
        pb_utils.TRITONSERVER_MEMORY_CPU
    )


def test_bls_video_networks_report_a_missing_output(monkeypatch):
    monkeypatch.setattr(
        pb_utils,
        "bls_handler",
        lambda call: pb_utils.InferenceResponse([pb_utils.Tensor("other", np.zeros(1))]),
    )
    with pytest.raises(triton_io.NetworkCallError, match="^memory_encoder: .*memory_features$"):
        triton_io.BlsVideoNetworks().encode_memory({"a": torch.zeros(1)})


def test_image_networks_follow_the_decoder_parameter():
    assert type(triton_io.image_networks({}, None)) is triton_io.BlsImageNetworks
    assert type(triton_io.image_networks({"decoder": "bls"}, None)) is triton_io.BlsImageNetworks
    with pytest.raises(ValueError, match="CPU deployments only"):
        triton_io.image_networks({"decoder": "in_process"}, None, torch.device("meta"))


def test_serving_device_follows_the_device_parameter():
    args = {"model_instance_device_id": "0"}
    assert triton_io.serving_device(args, {}) == torch.device("cpu")
    assert triton_io.serving_device(args, {"device": "cpu"}) == torch.device("cpu")
    if torch.cuda.is_available():
        assert triton_io.serving_device(args, {"device": "gpu"}) == torch.device("cuda:0")
    else:  # a GPU profile's model on a machine without one says so at load
        with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
            triton_io.serving_device(args, {"device": "gpu"})


# -- the stand-in itself -----------------------------------------------------------------------


def test_stand_in_tensors_behave_like_triton():
    source = np.ones(3, np.float32)
    tensor = pb_utils.Tensor("T", source)
    source[:] = 5  # the tensor holds a copy, as Triton's shared memory does
    assert tensor.as_numpy().tolist() == [1.0, 1.0, 1.0]
    assert pb_utils.Tensor("S", np.array(["a", 7], np.object_)).as_numpy().tolist() == [b"a", b"7"]
    with pytest.raises(TypeError, match="has no Triton data type"):
        pb_utils.Tensor("U", np.array(["text"]))
    with pytest.raises(ValueError, match="empty"):
        pb_utils.Tensor("", source)
    shared = torch.ones(1, 3).expand(2, 3)
    with pytest.raises(RuntimeError, match="not contiguous"):
        pb_utils.Tensor.from_dlpack("V", shared)
    dense = pb_utils.Tensor.from_dlpack("D", shared.contiguous())
    assert dense.as_numpy().shape == (2, 3) and dense.is_cpu()
    assert torch.equal(torch.from_dlpack(dense.to_dlpack()), torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="TYPE_BYTES"):
        pb_utils.Tensor("S", np.array([b"a"], np.object_)).to_dlpack()
    req = request(A=source)
    assert pb_utils.get_input_tensor_by_name(req, "A").name() == "A"
    assert pb_utils.get_input_tensor_by_name(req, "B") is None
