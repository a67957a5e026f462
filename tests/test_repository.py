"""The repository generator: every profile yields configs Triton's schema accepts, with the
backend, files, I/O and parameters the profile asks for. No server needed."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from sam2_triton.configs import (
    NETWORKS,
    RequestLimits,
    get_profile,
    load_profiles,
    load_serving_settings,
)
from sam2_triton.errors import ConfigError, ExportError
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.serving.repository import ENSEMBLES, MARKER_FILE, PYTHON_MODELS, build_repository


def read_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def fake_plans(exported, profile_name):
    engines = exported.directory / "engines" / profile_name
    engines.mkdir(parents=True, exist_ok=True)
    for name in NETWORKS:
        (engines / f"{name}.plan").write_bytes(b"plan bytes for the generator test")
    return engines


@pytest.mark.parametrize("profile_name", sorted(load_profiles()))
def test_every_profile_generates_valid_configs(exported, tmp_path, profile_name):
    profile = get_profile(profile_name)
    engine_dir = (
        fake_plans(exported, profile_name) if profile.triton_backend == "tensorrt_plan" else None
    )
    repo = build_repository(
        exported.directory,
        tmp_path / "repo",
        profile,
        engine_dir=engine_dir,
        checkpoint=exported.checkpoint if profile.runtime == "torch" else None,
    )
    expected = set(NETWORKS) | {m.name for m in PYTHON_MODELS} | set(ENSEMBLES)
    assert {p.name for p in repo.iterdir() if p.is_dir()} == expected
    configs = {name: read_config(repo / name / "config.pbtxt") for name in expected}

    for name in NETWORKS:
        config, contract, version = configs[name], CONTRACTS[name], repo / name / "1"
        assert [i.name for i in config.input] == contract.input_names
        assert [o.name for o in config.output] == contract.output_names
        kind = config.instance_group[0].kind
        assert kind == (
            model_config_pb2.ModelInstanceGroup.KIND_GPU
            if profile.device == "gpu"
            else model_config_pb2.ModelInstanceGroup.KIND_CPU
        )
        if profile.triton_backend == "tensorrt_plan":
            assert config.platform == "tensorrt_plan" and (version / "model.plan").is_file()
        elif profile.triton_backend == "onnxruntime":
            assert config.backend == "onnxruntime" and (version / "model.onnx").is_file()
        else:
            assert config.backend == "python" and (version / "model.py").is_file()
            assert config.parameters["runtime"].string_value == profile.runtime
            if profile.runtime == "torch":
                assert config.parameters["checkpoint"].string_value == str(
                    exported.checkpoint.resolve()
                )
            else:
                assert (version / contract.file).is_file()
        assert len(config.model_warmup) == 1
    assert (
        configs["image_encoder"].max_batch_size == profile.axis_range("image_encoder", "batch")[2]
    )
    assert configs["image_encoder"].input[0].dims == [3, 1024, 1024]
    assert configs["mask_decoder"].max_batch_size == 0
    # track_video batches frames of several sequences: ragged inputs, the engines' limits
    video = configs["track_video"]
    settings = load_serving_settings()["video"]
    assert video.max_batch_size == settings["max_batch_frames"] > 1
    delay = video.sequence_batching.oldest.max_queue_delay_microseconds
    assert delay == settings["batch_queue_delay_us"]
    ragged = {i.name for i in video.input if i.allow_ragged_batch}
    assert {"IMAGE_RAW", "POINT_COORDS", "MASK_PROMPTS"} <= ragged and "IMAGE" not in ragged
    assert json.loads(video.parameters["video_batch_limits"].string_value) == {
        "image_encoder": profile.axis_range("image_encoder", "batch")[2],
        "memory_attention": profile.axis_range("memory_attention", "batch")[2],
        "mask_decoder": profile.axis_range("mask_decoder", "num_prompts")[2],
        "memory_encoder": profile.axis_range("memory_encoder", "batch")[2],
    }

    limits = RequestLimits.for_profile(profile)
    for model in PYTHON_MODELS:
        config = configs[model.name]
        assert config.backend == "python"
        assert (repo / model.name / "1" / "model.py").is_file()
        assert (repo / model.name / "1" / "metadata.json").is_file() == model.needs_metadata
        if "limits" in model.parameters:
            params = {k: v.string_value for k, v in config.parameters.items()}
            assert RequestLimits.from_parameters(params) == limits
    assert configs["segment_interactive"].instance_group[0].count == 1
    # the models that hold embeddings / sequences work on the serving device: on GPU profiles
    # an instance on each GPU, told so by their `device` parameter (triton_io.serving_device)
    for model in PYTHON_MODELS:
        config = configs[model.name]
        on_device = "device" in model.parameters
        assert on_device == (
            model.name in ("segment_interactive", "automatic_mask_generator", "track_video")
        )
        gpu = profile.device == "gpu" and on_device
        assert config.instance_group[0].kind == (
            model_config_pb2.ModelInstanceGroup.KIND_GPU
            if gpu
            else model_config_pb2.ModelInstanceGroup.KIND_CPU
        ), model.name
        if on_device:
            assert config.parameters["device"].string_value == ("gpu" if gpu else "cpu")
        # the embedding cache is one process's memory: one instance, pinned to one GPU
        pinned = gpu and "cache" in model.parameters
        assert list(config.instance_group[0].gpus) == ([0] if pinned else []), model.name
    in_process = profile.name == "cpu"
    for name in ("segment_interactive", "automatic_mask_generator"):
        assert configs[name].parameters["decoder"].string_value == (
            "in_process" if in_process else "bls"
        )
        assert (repo / name / "1" / "mask_decoder.onnx").is_file() == in_process
    generator = json.loads(
        configs["automatic_mask_generator"].parameters["generator_defaults"].string_value
    )
    assert generator["points_per_side"] == 32 and generator["pred_iou_thresh"] == 0.8

    for name in ENSEMBLES:
        config = configs[name]
        assert config.platform == "ensemble"
        steps = [s.model_name for s in config.ensemble_scheduling.step]
        assert set(steps) <= expected
        # Every tensor a step consumes is an ensemble input or produced by an earlier step.
        available = {i.name for i in config.input}
        for step in config.ensemble_scheduling.step:
            assert set(step.input_map.values()) <= available, (name, step.model_name)
            available |= set(step.output_map.values())
        assert {o.name for o in config.output} <= available
    marker = json.loads((repo / MARKER_FILE).read_text())
    assert marker["profile"] == profile_name and marker["model"] == exported.spec.name


def test_tensorrt_profile_without_plans_says_how_to_build_them(exported, tmp_path):
    with pytest.raises(ExportError, match="build-engines"):
        build_repository(
            exported.directory,
            tmp_path / "repo",
            get_profile("gpu-fp16"),
            engine_dir=tmp_path / "no-engines",
        )
    assert not (tmp_path / "repo").exists()


def test_torch_profile_needs_checkpoint(exported, tmp_path):
    with pytest.raises(ConfigError, match="--checkpoint"):
        build_repository(exported.directory, tmp_path / "repo", get_profile("gpu-torch"))


def test_refuses_to_replace_a_foreign_folder(exported, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a repository built by sam2-triton"):
        build_repository(exported.directory, foreign, get_profile("cpu"))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_rebuild_replaces_own_repository(exported, tmp_path):
    repo = build_repository(exported.directory, tmp_path / "repo", get_profile("cpu"), warmup=False)
    (repo / "stale_model").mkdir()
    repo = build_repository(exported.directory, tmp_path / "repo", get_profile("cpu"))
    assert not (repo / "stale_model").exists()
    assert len(read_config(repo / "image_encoder" / "config.pbtxt").model_warmup) == 1
