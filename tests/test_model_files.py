"""The `model_repository/*/1/model.py` files, run as Triton's Python backend runs them, with no
server: imported by path over the pb_utils stand-in (tests/triton_stub.py), initialized with the
`args` Triton passes (the generated config.pbtxt as JSON, the version folder), then `execute`d
on batches of requests. Every request sent fits the model's config (names, data types, dims,
control inputs), and every answer is checked against the config's outputs.

Unit tier: repositories generated from a graphless export (the stand-in networks' metadata.json,
placeholder graph files that nothing opens); networks answer from the tracker tests' stand-in
networks, through the BLS hook or in place of ONNX Runtime. Model tier (`exported`): the real
CPU repository of the test export, its network models answering the BLS calls, against the
in-process predictor and tracker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import triton_stub as pb_utils
from conftest import SERVED_VIDEO_SETTINGS
from google.protobuf import json_format, text_format
from test_triton_glue import encoded_png, image_rgb
from test_video_tracking import FAKE_METADATA, FAKE_SIZE, FakeNetworks, fake_frame
from triton_stub import answer_with, outputs, request
from tritonclient.grpc import model_config_pb2

from sam2_triton.configs import get_profile
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.metadata import FORMAT_VERSION, write_metadata
from sam2_triton.python_backend import onnx_networks
from sam2_triton.python_backend.images import preprocess_image
from sam2_triton.python_backend.onnx_networks import validate_inputs
from sam2_triton.python_backend.video.sequences import VideoSettings
from sam2_triton.serving.repository import build_repository

INVALID_ARG = pb_utils.TritonError.INVALID_ARG
INTERNAL = pb_utils.TritonError.INTERNAL
NO_MEM_CHANNEL = 2  # the stand-in networks' no_mem_embed is one-hot here (FAKE_METADATA)

# -- loading a model as Triton does ------------------------------------------------------------


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def numpy_dtype(data_type: int) -> np.dtype:
    return np.dtype(pb_utils.triton_string_to_numpy(model_config_pb2.DataType.Name(data_type)))


def control_dtype(control) -> int:
    if control.fp32_false_true:
        return model_config_pb2.TYPE_FP32
    if control.int32_false_true:
        return model_config_pb2.TYPE_INT32
    if control.bool_false_true:
        return model_config_pb2.TYPE_BOOL
    return control.data_type


def fits(shape: tuple[int, ...], dims: list[int]) -> bool:
    return len(shape) == len(dims) and all(d in (-1, s) for d, s in zip(dims, shape))


@dataclass
class LoadedModel:
    name: str
    config: model_config_pb2.ModelConfig
    model: object  # the model.py's TritonPythonModel, initialized

    @property
    def batching(self) -> bool:
        return self.config.max_batch_size > 0

    def check_request(self, req) -> None:
        """What Triton checks before `execute`: declared names, data types, dims, and every
        non-optional input (control inputs of sequence batching included) present."""
        declared = {i.name: (i.data_type, list(i.dims), i.optional) for i in self.config.input}
        for control in self.config.sequence_batching.control_input:
            declared[control.name] = (control_dtype(control.control[0]), [1], False)
        sent = {t.name(): t.as_numpy() for t in req.inputs()}
        for name, array in sent.items():
            assert name in declared, f"{self.name} has no input {name}"
            data_type, dims, _ = declared[name]
            assert array.dtype == numpy_dtype(data_type), (name, array.dtype)
            assert fits(array.shape[1:] if self.batching else array.shape, dims), (name, dims)
        missing = [n for n, (_, _, optional) in declared.items() if not optional and n not in sent]
        assert not missing, f"{self.name}: Triton would refuse a request without {missing}"

    def check_response(self, req, response) -> None:
        """A successful answer holds exactly the config's outputs, in their types and dims."""
        declared = {o.name: o for o in self.config.output}
        got = outputs(response)
        assert sorted(got) == sorted(declared), self.name
        batch = len(req.inputs()[0].as_numpy()) if self.batching else None
        for name, array in got.items():
            spec = declared[name]
            assert array.dtype == numpy_dtype(spec.data_type), (self.name, name, array.dtype)
            shape = array.shape
            if batch is not None:
                assert shape[0] == batch, (self.name, name, shape)
                shape = shape[1:]
            assert fits(shape, list(spec.dims)), (self.name, name, shape, list(spec.dims))

    def sequence_request(self, corrid: int | str, start: bool, end: bool, **inputs: np.ndarray):
        """A request of a sequence model as Triton hands it over: the correlation id (int or
        str) and the control inputs its config's `sequence_batching.control_input` asks
        (START / END / READY, CORRID)."""
        values = {
            model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START: start,
            model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END: end,
            model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY: True,
            model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID: corrid,
        }
        controls = {}
        for control_input in self.config.sequence_batching.control_input:
            control = control_input.control[0]
            false_true = (
                control.fp32_false_true or control.int32_false_true or control.bool_false_true
            )
            value = values[control.kind]
            if false_true:
                value = false_true[int(bool(value))]
            controls[control_input.name] = np.array([value], numpy_dtype(control_dtype(control)))
        tensors = {**controls, **inputs}
        if self.batching:  # Triton's batch axis: one request
            tensors = {name: array[None] for name, array in tensors.items()}
        return pb_utils.InferenceRequest(
            inputs=[pb_utils.Tensor(name, array) for name, array in tensors.items()],
            correlation_id=corrid,
        )

    def execute(self, *requests, checked: bool = True) -> list:
        """`execute` on one batch; `checked=False` for requests Triton itself would refuse."""
        if checked:
            for req in requests:
                self.check_request(req)
        responses = self.model.execute(list(requests))
        assert len(responses) == len(requests)
        for req, response in zip(requests, responses):
            if not response.has_error():
                self.check_response(req, response)
        return responses


def load_model(repository: Path, name: str) -> LoadedModel:
    """Import the version folder's model.py and initialize it with Triton's `args`: the
    config as JSON (proto field names, defaults included), the model folder and version."""
    directory = repository / name
    config = read_config(directory / "config.pbtxt")
    config.name = config.name or name  # Triton fills the name in from the folder
    device = config.parameters.get("device")
    if device is not None and device.string_value == "gpu" and not torch.cuda.is_available():
        # GPU profiles' models keep their tensors on their GPU; without one, the same code
        # runs on the CPU (the generated configs themselves are checked in test_repository)
        device.string_value = "cpu"
    config_json = json_format.MessageToDict(
        config, preserving_proto_field_name=True, including_default_value_fields=True
    )
    model = pb_utils.load_model_class(directory / "1" / "model.py")()
    model.initialize(
        {
            "model_config": json.dumps(config_json),
            "model_instance_kind": "CPU",
            "model_instance_name": f"{name}_0_0",
            "model_instance_device_id": "0",
            "model_repository": str(directory),
            "model_version": "1",
            "model_name": name,
        }
    )
    return LoadedModel(name, config, model)


def error_of(response) -> tuple[int, str]:
    assert response.has_error(), "expected an error response"
    assert not response.output_tensors()
    return response.error().code(), response.error().message()


# -- stand-in networks -------------------------------------------------------------------------


def fake_network_functions(fake: FakeNetworks) -> dict[str, Callable[[dict], dict]]:
    """network -> function(inputs) -> outputs, answered by FakeNetworks (the image encoder row
    by row, so that each row of a batch gets its own features)."""

    def encode(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [fake.encode(image[None]) for image in inputs["image"]]
        return {name: np.concatenate([row[name] for row in rows]) for name in rows[0]}

    return {
        "image_encoder": encode,
        "mask_decoder": fake.decode,
        "memory_encoder": fake.encode_memory,
        "memory_attention": fake.attend,
    }


class _CpuSession:
    """What the runners ask of an ONNX Runtime session's placement: the CPU provider."""

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


class FakeOnnxNetworks:
    """In place of OnnxNetworks (same constructor, no graph opened): every run is checked
    against the I/O contract, as the real runner checks it, then answered by FakeNetworks."""

    def __init__(self, export_dir, networks=tuple(CONTRACTS), **options) -> None:
        self.export_dir = Path(export_dir)
        self.networks = list(networks)
        self.options = options
        self.functions = fake_network_functions(FakeNetworks())
        self.runs: list[tuple[str, int]] = []  # (network, leading size of the first input)
        self.metadata = FAKE_METADATA
        self.sessions = {name: _CpuSession() for name in self.networks}

    def run(self, network: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        assert network in self.networks
        validate_inputs(CONTRACTS[network], inputs)
        self.runs.append((network, len(next(iter(inputs.values())))))
        return self.functions[network](inputs)


@pytest.fixture
def onnx_runners(monkeypatch) -> list[FakeOnnxNetworks]:
    """OnnxNetworks replaced by FakeOnnxNetworks; the list of those made."""
    made = []

    def make(*args, **kwargs):
        made.append(FakeOnnxNetworks(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(onnx_networks, "OnnxNetworks", make)
    return made


class BlsNetworks:
    """The BLS hook: the four network models answered from FakeNetworks (`models`: model name
    -> function, which a test may replace), each call checked against the I/O contract."""

    def __init__(self) -> None:
        self.fake = FakeNetworks()
        self.models = fake_network_functions(self.fake)
        self.calls: list[str] = []  # model names, in call order

    def __call__(self, call):
        self.calls.append(call.model_name())
        validate_inputs(
            CONTRACTS[call.model_name()], {t.name(): t.as_numpy() for t in call.inputs()}
        )
        return answer_with(self.models)(call)


@pytest.fixture
def bls(monkeypatch) -> BlsNetworks:
    networks = BlsNetworks()
    monkeypatch.setattr(pb_utils, "bls_handler", networks)
    return networks


# -- repositories of a graphless export --------------------------------------------------------

BLS_PROFILE = "gpu-onnxruntime"  # BLS models call the mask_decoder model
CPU_PROFILE = "cpu"  # network models in Python; BLS models run the decoder themselves


@pytest.fixture(scope="module")
def repositories(tmp_path_factory) -> dict[str, Path]:
    """profile name -> repository generated from the stand-in networks' metadata."""
    export = tmp_path_factory.mktemp("graphless-export")
    write_metadata(
        export, {**FAKE_METADATA, "format_version": FORMAT_VERSION, "model": {"name": "tiny"}}
    )
    for contract in CONTRACTS.values():  # linked into the repository, never opened here
        (export / contract.file).write_bytes(b"placeholder: the unit tier runs no graph")
    root = tmp_path_factory.mktemp("repositories")
    return {
        name: build_repository(
            export,
            root / name,
            get_profile(name),
            warmup=False,
            video=VideoSettings(**SERVED_VIDEO_SETTINGS),
        )
        for name in (BLS_PROFILE, CPU_PROFILE)
    }


def click(x: float, y: float, label: int = 1) -> dict[str, np.ndarray]:
    return dict(
        POINT_COORDS=np.array([[[x, y]]], np.float32), POINT_LABELS=np.array([[label]], np.int32)
    )


# -- pre- and post-processing ------------------------------------------------------------------


def test_preprocess_image(repositories):
    model = load_model(repositories[CPU_PROFILE], "preprocess_image")
    first, second = image_rgb(30, 40), image_rgb(50, 20, seed=1)
    good, outside, raw = model.execute(
        request(IMAGE=encoded_png(first), **click(39.0, 29.0)),
        request(IMAGE_RAW=first, **click(400.0, 10.0)),
        request(IMAGE_RAW=second),
    )
    result = outputs(good)
    np.testing.assert_array_equal(result["image"], preprocess_image(first)[0])
    assert result["ORIGINAL_SIZE"].tolist() == [30, 40]
    code, message = error_of(outside)
    assert code == INVALID_ARG and "POINT_COORDS" in message
    assert outputs(raw)["ORIGINAL_SIZE"].tolist() == [50, 20]


def test_preprocess_prompts(repositories):
    model = load_model(repositories[CPU_PROFILE], "preprocess_prompts")
    embed = np.random.default_rng(2).standard_normal((1, 256, 64, 64)).astype(np.float32)
    good, bad_size = model.execute(
        request(image_embed=embed, ORIGINAL_SIZE=np.array([30, 40], np.int32), **click(20, 15)),
        request(image_embed=embed, ORIGINAL_SIZE=np.array([0, 40], np.int32), **click(20, 15)),
    )
    result = outputs(good)
    expected = embed.copy()
    expected[:, NO_MEM_CHANNEL] += 1.0  # image mode: + no_mem_embed
    np.testing.assert_array_equal(result["conditioned_image_embed"], expected)
    np.testing.assert_allclose(result["point_coords"][0, 0], [20 * 1024 / 40, 15 * 1024 / 30])
    assert result["point_labels"][0, 0] == 1 and result["has_mask_input"].tolist() == [0.0]
    assert error_of(bad_size) == (
        INVALID_ARG,
        "ORIGINAL_SIZE must be (height, width) >= 1, got [0, 40]",
    )


def test_postprocess_masks_multimask_by_default(repositories):
    model = load_model(repositories[CPU_PROFILE], "postprocess_masks")
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 4, 256, 256)).astype(np.float32)
    iou = np.float32([[0.1, 0.9, 0.2, 0.3], [0.5, 0.1, 0.2, 0.8]])
    size = np.array([30, 40], np.int32)
    default, single = model.execute(
        request(masks=logits, iou_scores=iou, ORIGINAL_SIZE=size),
        request(
            masks=logits, iou_scores=iou, ORIGINAL_SIZE=size, MULTIMASK_OUTPUT=np.zeros(1, bool)
        ),
    )
    assert outputs(default)["MASKS"].shape == (2, 3, 30, 40)
    np.testing.assert_array_equal(outputs(default)["SCORES"], iou[:, 1:])
    assert outputs(single)["MASKS"].shape == (2, 1, 30, 40)


def metric_value(name: str, model: str, **labels: str) -> float:
    """What Triton would export for a custom metric of `model` (the latest family of `name`)."""
    family = pb_utils.MetricFamily.registry[name]
    wanted = {"model": model, **labels}
    return sum(m.value for m in family.metrics if m.labels == wanted)


# -- segment_interactive -----------------------------------------------------------------------


def test_segment_interactive_caches_embeddings_between_requests(repositories, bls):
    model = load_model(repositories[BLS_PROFILE], "segment_interactive")
    image = image_rgb(*FAKE_SIZE)
    [first] = model.execute(request(IMAGE=encoded_png(image), **click(10.0, 12.0)))
    result = outputs(first)
    image_id = result["IMAGE_ID"][0]
    assert isinstance(image_id, bytes) and image_id
    assert result["ORIGINAL_SIZE"].tolist() == list(FAKE_SIZE)
    assert result["MASKS"].shape == (1, 3, *FAKE_SIZE) and result["MASKS"].any()
    assert bls.calls == ["image_encoder", "mask_decoder"]

    ids = np.array([image_id], np.object_)
    boxed, no_prompt, both, released = model.execute(
        request(
            IMAGE_ID=ids, BOXES=np.float32([[2, 3, 20, 18]]), MULTIMASK_OUTPUT=np.zeros(1, bool)
        ),
        request(IMAGE_ID=ids),
        request(IMAGE_ID=ids, IMAGE_RAW=image, **click(1.0, 1.0)),
        request(IMAGE_ID=ids, RELEASE=np.ones(1, bool)),
    )
    assert outputs(boxed)["MASKS"].shape == (1, 1, *FAKE_SIZE)
    assert outputs(boxed)["IMAGE_ID"].tolist() == [image_id]
    assert bls.calls[2:] == ["mask_decoder"]  # the cached embeddings: no encoding
    code, message = error_of(no_prompt)
    assert code == INVALID_ARG and message.startswith("no prompt")
    code, message = error_of(both)
    assert code == INVALID_ARG and "not both" in message
    assert outputs(released)["MASKS"].shape == (0, 0, *FAKE_SIZE)  # no prompt: zero rows
    [gone] = model.execute(request(IMAGE_ID=ids, **click(1.0, 1.0)))
    code, message = error_of(gone)
    assert code == INVALID_ARG and message.startswith("unknown IMAGE_ID")

    # Prometheus metrics of the cache (Triton's custom-metrics API)
    def value(name: str, **labels: str) -> float:
        return metric_value(name, "segment_interactive", **labels)

    assert value("sam2_embedding_cache_hits_total") == 3  # boxed, no prompt, released
    assert value("sam2_embedding_cache_misses_total") == 1  # gone
    assert value("sam2_embedding_cache_entries") == 0 and value("sam2_embedding_cache_bytes") == 0
    assert value("sam2_refused_requests_total", reason="invalid_request") == 3


def test_segment_interactive_checks_prompts_before_encoding(repositories, bls):
    model = load_model(repositories[BLS_PROFILE], "segment_interactive")
    [outside, nothing] = model.execute(
        request(IMAGE_RAW=image_rgb(*FAKE_SIZE), **click(500.0, 1.0)), request()
    )
    assert error_of(outside)[0] == INVALID_ARG and "POINT_COORDS" in error_of(outside)[1]
    assert error_of(nothing) == (
        INVALID_ARG,
        "send IMAGE (or IMAGE_RAW) to encode an image, or IMAGE_ID of an encoded one",
    )
    assert bls.calls == []


def test_segment_interactive_runs_the_decoder_in_process_on_cpu(repositories, bls, onnx_runners):
    model = load_model(repositories[CPU_PROFILE], "segment_interactive")
    [runner] = onnx_runners
    version = repositories[CPU_PROFILE] / "segment_interactive" / "1"
    assert runner.export_dir == version and runner.networks == ["mask_decoder"]
    assert (version / CONTRACTS["mask_decoder"].file).is_file()
    [answer] = model.execute(request(IMAGE_RAW=image_rgb(*FAKE_SIZE), **click(10.0, 12.0)))
    assert outputs(answer)["MASKS"].shape == (1, 3, *FAKE_SIZE)
    assert bls.calls == ["image_encoder"] and runner.runs == [("mask_decoder", 1)]


# -- automatic_mask_generator ------------------------------------------------------------------


def test_automatic_mask_generator_settings_per_request(repositories, bls):
    model = load_model(repositories[BLS_PROFILE], "automatic_mask_generator")
    image = image_rgb(*FAKE_SIZE)
    keep_all = dict(
        POINTS_PER_SIDE=np.array([2], np.int32),
        PRED_IOU_THRESH=np.zeros(1, np.float32),
        STABILITY_SCORE_THRESH=np.zeros(1, np.float32),
    )
    good, bad_thresh, too_many = model.execute(
        request(IMAGE_RAW=image, **keep_all),
        request(IMAGE_RAW=image, PRED_IOU_THRESH=np.float32([1.5])),
        request(IMAGE_RAW=image, POINTS_PER_BATCH=np.array([10_000], np.int32)),
    )
    result = outputs(good)
    assert len(result["RLE_COUNTS"]) >= 1 and isinstance(result["RLE_COUNTS"][0], bytes)
    assert len({len(result[n]) for n in ("RLE_COUNTS", "BOXES", "AREAS", "PREDICTED_IOUS")}) == 1
    assert result["ORIGINAL_SIZE"].tolist() == list(FAKE_SIZE)
    # 2 x 2 points, one decoder call: the grid reached the decoder
    assert bls.calls == ["image_encoder", "mask_decoder"]
    assert len(bls.fake.decoded) == 4
    code, message = error_of(bad_thresh)
    assert code == INVALID_ARG and "pred_iou_thresh" in message
    code, message = error_of(too_many)
    assert code == INVALID_ARG and "exceeds the decoder's maximum" in message


# -- network (Python-backend runner of one graph) ----------------------------------------------


def encoder_input(values: list[int]) -> np.ndarray:
    """Model-input images whose first pixel reads back as `values` in FakeNetworks.encode."""
    image = np.zeros((len(values), 3, 1024, 1024), np.float32)
    image[:, 0, 0, 0] = (np.float32(values) / 255 - 0.485) / 0.229
    return image


def test_network_batches_requests_and_splits_the_answer(repositories, onnx_runners):
    model = load_model(repositories[CPU_PROFILE], "image_encoder")
    [runner] = onnx_runners
    assert runner.options["allow_spinning"] is False  # CPU profile: idle threads sleep
    one, wrong, two = model.execute(
        request(image=encoder_input([10, 20])),
        request(image=np.zeros((1, 3, 512, 512), np.float32)),  # Triton itself would refuse it
        request(image=encoder_input([30])),
        checked=False,
    )
    assert runner.runs == [("image_encoder", 3)]  # the valid requests as one batch
    frames = [outputs(r)["image_embed"][:, 0, 0, 0].tolist() for r in (one, two)]
    assert frames == [[10.0, 20.0], [30.0]]
    assert outputs(one)["high_res_feats_0"].shape == (2, 32, 256, 256)
    code, message = error_of(wrong)
    assert code == INVALID_ARG and message.startswith("image_encoder.image: size 512")


def test_network_failure_fails_the_batch_as_internal(repositories, onnx_runners):
    model = load_model(repositories[CPU_PROFILE], "image_encoder")

    def fail(network, **inputs):
        raise MemoryError("no memory left")

    onnx_runners[0].run = fail
    answers = model.execute(request(image=encoder_input([1])), request(image=encoder_input([2])))
    assert [error_of(a) for a in answers] == [
        (INTERNAL, "image_encoder: MemoryError: no memory left")
    ] * 2


def test_network_without_batching_answers_each_request(repositories, onnx_runners):
    model = load_model(repositories[CPU_PROFILE], "memory_encoder")
    sizes = {"batch": 2, "mask_height": 256, "mask_width": 256}
    inputs = {
        spec.name: np.zeros(spec.concrete_shape(sizes), spec.dtype)
        for spec in CONTRACTS["memory_encoder"].inputs
    }
    without_logits = {k: v for k, v in inputs.items() if k != "mask_logits"}
    good, bad = model.execute(request(**inputs), request(**without_logits), checked=False)
    assert outputs(good)["memory_features"].shape == (2, 64, 64, 64)
    assert error_of(bad) == (INVALID_ARG, "memory_encoder: input mask_logits is required")
    assert onnx_runners[0].runs == [("memory_encoder", 2)]


# -- track_video -------------------------------------------------------------------------------

_corrids = iter(range(100, 10**6))


def answer(response) -> dict[str, np.ndarray]:
    """A track_video response's outputs without Triton's batch axis (one request)."""
    return {name: array[0] for name, array in outputs(response).items()}


def frame_request(model: LoadedModel, corrid, start=False, end=False, frame=None, **tensors):
    """A track_video request: a frame (IMAGE_RAW) or none, other inputs, Triton's controls."""
    image = {} if frame is None else {"IMAGE_RAW": frame}
    return model.sequence_request(corrid, start, end, **image, **tensors)


def video_click(obj_id: int) -> dict[str, np.ndarray]:
    return dict(
        POINT_OBJ_IDS=np.array([obj_id], np.int64),
        POINT_COORDS=np.array([[[obj_id * 1.0, 4.0]]], np.float32),
        POINT_LABELS=np.array([[1]], np.int32),
    )


@pytest.fixture
def track_video(repositories, bls):
    model = load_model(repositories[BLS_PROFILE], "track_video")
    yield model
    model.model.finalize()
    assert not model.model.evictor._thread.is_alive()


def test_track_video_runs_numpy_blas_on_one_thread(track_video):
    """initialize left numpy's BLAS one thread (python_backend/host_threads.py): its busy
    pool would take the cores from torch's threads."""
    from threadpoolctl import threadpool_info

    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_track_video_routes_sequences_and_fails_requests_alone(track_video, bls):
    a, b, never = next(_corrids), next(_corrids), next(_corrids)
    started_a, started_b, unknown = track_video.execute(
        frame_request(track_video, a, start=True, frame=fake_frame(0), **video_click(1)),
        frame_request(track_video, b, start=True, frame=fake_frame(0), **video_click(2)),
        frame_request(track_video, never, frame=fake_frame(0)),
    )
    first = answer(started_a)
    assert first["OBJ_IDS"].tolist() == [1] and first["TRACKED_FRAME"].tolist() == [0]
    assert first["MASKS"].shape == (1, *FAKE_SIZE) and first["MASKS"].any()
    assert first["STATE_BYTES"][0] > 0
    assert answer(started_b)["OBJ_IDS"].tolist() == [2]
    assert error_of(unknown) == (
        INVALID_ARG,
        f"video sequence {never} was never started (send START first)",
    )
    # each sequence's decoder call carried its own click (FakeNetworks reads x back as a key)
    assert [row["key"] for row in bls.fake.decoded] == [1, 2]

    next_a, ended_b = track_video.execute(
        frame_request(track_video, a, frame=fake_frame(1)), frame_request(track_video, b, end=True)
    )
    assert answer(next_a)["TRACKED_FRAME"].tolist() == [1]
    assert answer(next_a)["OBJ_IDS"].tolist() == [1]
    ended = answer(ended_b)
    assert ended["TRACKED_FRAME"].tolist() == [-1] and ended["STATE_BYTES"].tolist() == [0]
    assert ended["MASKS"].shape == (0, 0, 0)
    [after_end] = track_video.execute(frame_request(track_video, b, frame=fake_frame(2)))
    assert error_of(after_end) == (
        INVALID_ARG,
        f"video sequence {b} has ended (END was sent); start a new sequence with START",
    )


def test_track_video_refused_start_and_end_still_change_the_sequence(track_video):
    seq = next(_corrids)
    answer(track_video.execute(frame_request(track_video, seq, start=True, frame=fake_frame(0)))[0])
    # a refused START drops what the id held before
    bad_labels = dict(video_click(1), POINT_LABELS=np.array([[7]], np.int32))
    [refused] = track_video.execute(
        frame_request(track_video, seq, start=True, frame=fake_frame(0), **bad_labels)
    )
    assert error_of(refused)[0] == INVALID_ARG and "POINT_LABELS holds 7" in error_of(refused)[1]
    [later] = track_video.execute(frame_request(track_video, seq, frame=fake_frame(1)))
    code, message = error_of(later)
    assert code == INVALID_ARG and "could not start" in message and "send START again" in message
    # a refused END still ends the sequence
    answer(track_video.execute(frame_request(track_video, seq, start=True, frame=fake_frame(0)))[0])
    [refused_end] = track_video.execute(frame_request(track_video, seq, end=True, **bad_labels))
    assert error_of(refused_end)[0] == INVALID_ARG
    [after] = track_video.execute(frame_request(track_video, seq, frame=fake_frame(1)))
    assert "has ended" in error_of(after)[1]


def test_track_video_string_sequence_ids_are_whole(track_video, bls):
    """Issue item 3: with a UINT64 CORRID control, Triton 2.51 filled it with a string id's
    length and first bytes, so "video-a" and "video-b" shared one tracker. The model reads the
    request's correlation id instead, whole."""
    config = track_video.config.sequence_batching
    assert [c.name for c in config.control_input] == ["START", "END"]  # no CORRID
    a, b, seven = "video-a", "video-b", "7"
    started = track_video.execute(
        frame_request(track_video, a, start=True, frame=fake_frame(0), **video_click(1)),
        frame_request(track_video, b, start=True, frame=fake_frame(0), **video_click(2)),
        frame_request(track_video, seven, start=True, frame=fake_frame(0), **video_click(3)),
        frame_request(track_video, 7, start=True, frame=fake_frame(0), **video_click(4)),
    )
    assert [answer(r)["OBJ_IDS"].tolist() for r in started] == [[1], [2], [3], [4]]
    ended_b, next_a, next_seven = track_video.execute(
        frame_request(track_video, b, end=True),
        frame_request(track_video, a, frame=fake_frame(1)),
        frame_request(track_video, seven, frame=fake_frame(1), end=True),
    )
    assert answer(ended_b)["STATE_BYTES"].tolist() == [0]
    assert answer(next_a)["OBJ_IDS"].tolist() == [1]  # A's own object, B's END left it
    assert answer(next_seven)["OBJ_IDS"].tolist() == [3]
    after_b, after_seven, seven_int = track_video.execute(
        frame_request(track_video, b, frame=fake_frame(1)),
        frame_request(track_video, seven, frame=fake_frame(2)),
        frame_request(track_video, 7, frame=fake_frame(1), end=True),
    )
    assert error_of(after_b) == (
        INVALID_ARG,
        "video sequence 'video-b' has ended (END was sent); start a new sequence with START",
    )
    assert "video sequence '7' has ended" in error_of(after_seven)[1]
    assert answer(seven_int)["OBJ_IDS"].tolist() == [4]  # the integer 7 is another sequence
    # an id Triton would take but the model does not keep is refused and changes nothing
    [too_long] = track_video.execute(
        frame_request(track_video, "v" * 129, start=True, frame=fake_frame(0), **video_click(5))
    )
    assert error_of(too_long) == (
        INVALID_ARG,
        "string sequence ids must have 1..128 bytes; this one has 129",
    )
    [last_a] = track_video.execute(frame_request(track_video, a, frame=fake_frame(2), end=True))
    assert answer(last_a)["OBJ_IDS"].tolist() == [1]
    assert len(track_video.model.store) == 0


def test_track_video_refused_start_at_the_checks_leaves_no_sequence(track_video):
    """Issue item 4: a START refused by the checks after parsing (too many objects) used to
    leave an empty sequence that took the next frame; END alone still answers."""
    seq = next(_corrids)
    limit = SERVED_VIDEO_SETTINGS["max_objects"]
    n = limit + 1
    too_many = dict(
        POINT_OBJ_IDS=np.arange(n, dtype=np.int64),
        POINT_COORDS=np.full((n, 1, 2), 4.0, np.float32),
        POINT_LABELS=np.ones((n, 1), np.int32),
    )
    [refused] = track_video.execute(
        frame_request(track_video, seq, start=True, frame=fake_frame(0), **too_many)
    )
    assert error_of(refused) == (
        INVALID_ARG,
        f"a sequence tracks at most {limit} objects; this request would make it {n}",
    )
    [later] = track_video.execute(frame_request(track_video, seq, frame=fake_frame(1)))
    assert error_of(later) == (
        INVALID_ARG,
        f"video sequence {seq} could not start (a sequence tracks at most {limit} objects; "
        f"this request would make it {n}); send START again",
    )
    [end] = track_video.execute(frame_request(track_video, seq, end=True))
    assert answer(end)["TRACKED_FRAME"].tolist() == [-1]
    assert seq not in track_video.model.store


def test_track_video_triton_slots_exceed_the_models_sequences(track_video):
    """Issue item 5: Triton's max_candidate_sequences equalled max_sequences, so a START beyond
    waited, silently, in Triton's backlog; now Triton has spare slots and the model refuses."""
    from sam2_triton.python_backend.video.sequences import TRITON_SPARE_SEQUENCE_SLOTS

    oldest = track_video.config.sequence_batching.oldest
    held = SERVED_VIDEO_SETTINGS["max_sequences"]
    assert oldest.max_candidate_sequences == held + TRITON_SPARE_SEQUENCE_SLOTS
    ids = [next(_corrids) for _ in range(held + 1)]
    answers = track_video.execute(
        *(frame_request(track_video, i, start=True, frame=fake_frame(0)) for i in ids)
    )
    assert all(not r.has_error() for r in answers[:held])
    code, message = error_of(answers[held])
    assert code == INVALID_ARG and message.startswith(
        f"the server is full: it holds {held} video sequences, its maximum"
    )
    assert metric_value("sam2_video_sequences", "track_video") == held
    full = metric_value("sam2_refused_requests_total", "track_video", reason="server_full")
    assert full >= 1
    ended = track_video.execute(*(frame_request(track_video, i, end=True) for i in ids))
    assert all(not r.has_error() for r in ended) and len(track_video.model.store) == 0
    assert metric_value("sam2_video_sequences", "track_video") == 0


def test_track_video_publishes_frames_objects_state_and_refusals(track_video, bls):
    def value(name: str, **labels: str) -> float:
        return metric_value(name, "track_video", **labels)

    seq = next(_corrids)
    frames, unknown = (
        value("sam2_video_frames_total"),
        value("sam2_refused_requests_total", reason="unknown_sequence"),
    )
    start = frame_request(track_video, seq, start=True, frame=fake_frame(0), **video_click(1))
    answer(track_video.execute(start)[0])
    answer(track_video.execute(frame_request(track_video, seq, frame=fake_frame(1)))[0])
    assert value("sam2_video_frames_total") == frames + 2
    assert value("sam2_video_objects") == 1 and value("sam2_video_sequences") == 1
    assert value("sam2_video_state_bytes") == track_video.model.store.nbytes > 0
    [lost] = track_video.execute(frame_request(track_video, next(_corrids), frame=fake_frame(0)))
    assert error_of(lost)[0] == INVALID_ARG
    assert value("sam2_refused_requests_total", reason="unknown_sequence") == unknown + 1
    answer(track_video.execute(frame_request(track_video, seq, end=True))[0])
    assert value("sam2_video_sequences") == 0 and value("sam2_video_state_bytes") == 0


def test_track_video_network_failure_is_internal_and_the_next_frame_works(
    track_video, bls, monkeypatch
):
    seq = next(_corrids)
    start = frame_request(track_video, seq, start=True, frame=fake_frame(0), **video_click(1))
    answer(track_video.execute(start)[0])
    attend = bls.models["memory_attention"]

    def broken(inputs):
        raise RuntimeError("CUDA error")

    bls.models["memory_attention"] = broken
    [failed] = track_video.execute(frame_request(track_video, seq, frame=fake_frame(1)))
    assert error_of(failed) == (
        INTERNAL,
        "track_video: internal error: NetworkCallError: memory_attention: RuntimeError: CUDA error",
    )
    bls.models["memory_attention"] = attend
    [recovered] = track_video.execute(frame_request(track_video, seq, frame=fake_frame(1)))
    assert answer(recovered)["TRACKED_FRAME"].tolist() == [1]


# -- model tier: the real CPU repository of the test export --------------------------------------


@pytest.fixture(scope="module")
def cpu_repository(exported, tmp_path_factory) -> Path:
    return build_repository(
        exported.directory,
        tmp_path_factory.mktemp("cpu-repository") / "model_repository",
        get_profile(CPU_PROFILE),
        warmup=False,
        video=VideoSettings(**SERVED_VIDEO_SETTINGS),
    )


@pytest.fixture(scope="module")
def loaded_networks(cpu_repository) -> dict[str, LoadedModel]:
    """The repository's four network models (ONNX Runtime on the exported graphs)."""
    return {name: load_model(cpu_repository, name) for name in CONTRACTS}


@pytest.fixture
def network_models(cpu_repository, loaded_networks, monkeypatch) -> Path:
    """The repository, its BLS calls answered by its network models as Triton routes them:
    each call checked against that model's config, the requested outputs returned."""

    def route(call):
        [response] = loaded_networks[call.model_name()].execute(call)
        if response.has_error():
            return response
        wanted = call.requested_output_names()
        return pb_utils.InferenceResponse(
            [t for t in response.output_tensors() if t.name() in wanted]
        )

    monkeypatch.setattr(pb_utils, "bls_handler", route)
    return cpu_repository


def test_served_segment_interactive_equals_the_predictor(exported, network_models):
    from test_video_tracking import BOX, CLICK, synthetic_frames

    from sam2_triton.configs import RequestLimits
    from sam2_triton.export.metadata import load_metadata
    from sam2_triton.python_backend.image_predictor import ImagePredictor, OnnxImageNetworks
    from sam2_triton.python_backend.prompts import prepare_prompts

    image = synthetic_frames(1)[0]
    prompts = dict(  # two prompts: a click with a box, a box alone (a padding point)
        POINT_COORDS=np.array([CLICK[0], [[0.0, 0.0]]], np.float32),
        POINT_LABELS=np.array([CLICK[1], [-1]], np.int32),
        BOXES=np.array([[24.0, 24.0, 58.0, 58.0], BOX], np.float32),
    )
    model = load_model(network_models, "segment_interactive")
    [answer] = model.execute(request(IMAGE_RAW=image, **prompts))
    served = outputs(answer)

    predictor = ImagePredictor(
        OnnxImageNetworks(exported.directory), load_metadata(exported.directory)
    )
    limits = RequestLimits.for_profile(get_profile(CPU_PROFILE))
    reference = predictor.predict(
        predictor.encode(image),
        prepare_prompts(
            image.shape[:2],
            limits,
            point_coords=prompts["POINT_COORDS"],
            point_labels=prompts["POINT_LABELS"],
            boxes=prompts["BOXES"],
        ),
    )
    assert served["MASKS"].shape == (2, 3, *image.shape[:2]) and served["MASKS"].any()
    np.testing.assert_array_equal(served["MASKS"], reference.masks)
    np.testing.assert_allclose(served["SCORES"], reference.scores, atol=1e-6)
    np.testing.assert_allclose(served["LOW_RES_MASKS"], reference.low_res_masks, atol=1e-5)


def test_served_track_video_equals_the_tracker(exported, network_models):
    from test_video_tracking import BOX, CLICK, synthetic_frames

    from sam2_triton.python_backend.video.networks import OnnxVideoNetworks
    from sam2_triton.python_backend.video.tracker import VideoTracker

    frames = synthetic_frames(2)  # frame 1 goes through all four network models
    prompts = dict(
        POINT_OBJ_IDS=np.array([1], np.int64),
        POINT_COORDS=np.array([CLICK[0]], np.float32),
        POINT_LABELS=np.array([CLICK[1]], np.int32),
        BOX_OBJ_IDS=np.array([2], np.int64),
        BOXES=np.array([BOX], np.float32),
    )
    model = load_model(network_models, "track_video")
    seq = next(_corrids)
    try:
        served = [
            answer(model.execute(frame_request(model, seq, **step))[0])
            for step in (
                dict(start=True, frame=frames[0], NUM_FRAMES=np.array([2], np.int64), **prompts),
                dict(end=True, frame=frames[1]),
            )
        ]
    finally:
        model.model.finalize()

    settings = VideoSettings(**SERVED_VIDEO_SETTINGS)
    onnx = OnnxVideoNetworks(exported.directory)
    tracker = VideoTracker(
        onnx,
        onnx.metadata,
        num_frames=2,
        preprocessing=settings.preprocessing,
        memory_storage=settings.memory_storage,
    )
    tracker.add_prompt(0, 1, points=CLICK[0], labels=CLICK[1])
    tracker.add_prompt(0, 2, box=BOX)
    for t, frame in enumerate(frames):
        expected = tracker.track(t, frame)
        got = served[t]
        assert got["OBJ_IDS"].tolist() == [1, 2] and got["TRACKED_FRAME"].tolist() == [t]
        assert got["MASKS"].any(axis=(1, 2)).all()
        np.testing.assert_array_equal(got["MASKS"], expected.masks)
        np.testing.assert_allclose(got["SCORES"], expected.scores, atol=1e-6)
        np.testing.assert_allclose(
            got["OBJECT_SCORE_LOGITS"], expected.object_score_logits, atol=1e-5
        )
    assert served[0]["STATE_BYTES"][0] > 0
    assert served[1]["STATE_BYTES"].tolist() == [0]  # END freed the sequence
