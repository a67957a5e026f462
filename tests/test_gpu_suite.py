"""benchmarks/gpu_suite.py: the videos, plans and table it is made of, and its CPU version run
tiny: the official predictor and this tracker in process, and the served part against the
session's Triton server (`--served-url`; `make bench-gpu DEVICE=cpu` starts its own)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sam2_triton.benchmarks import gpu_suite

CASE_FIELDS = {"system", "objects", "streams", "frames", "fps", "runs_fps"}


def write_frames(folder, count, width=64, height=48):
    folder.mkdir()
    for t in range(count):
        pixels = np.full((height, width, 3), 10 * t, np.uint8)
        Image.fromarray(pixels).save(folder / f"{t}.jpg")
    return folder


def test_case_specs_sweep_objects_on_one_video_then_videos_of_one_object():
    specs = gpu_suite.case_specs([1, 3, 8], [1, 4, 16])
    assert [(s.objects, s.streams) for s in specs] == [(1, 1), (3, 1), (8, 1), (1, 4), (1, 16)]


def test_synthetic_videos_and_plans(tmp_path):
    videos = gpu_suite.synthetic_videos(2, 3, (96, 64), 3, tmp_path)
    assert [v.folder.name for v in videos] == ["video0", "video1"]
    assert [p.name for p in gpu_suite.jpeg_paths(videos[0].folder)] == [
        "00000.jpg",
        "00001.jpg",
        "00002.jpg",
    ]
    video = videos[0]
    assert len(video.jpegs) == len(video.frames) == 3 and video.size == "96x64"
    assert video.frames[0].flags.writeable and video.frames[0].dtype == np.uint8
    assert list(video.clicks) == [1, 2, 3]
    [(index, planned, clicks)] = gpu_suite.plan_objects(video, 2)
    assert (index, planned, list(clicks)) == (0, video, [1, 2])
    with pytest.raises(ValueError, match="4 objects"):
        gpu_suite.plan_objects(video, 4)
    streams = gpu_suite.plan_streams(videos, 2)
    assert [(i, v.folder.name, list(c)) for i, v, c in streams] == [
        (0, "video0", [1]),
        (1, "video1", [1]),
    ]


def test_a_folder_of_frames_is_every_stream_with_its_own_object(tmp_path):
    source = write_frames(tmp_path / "frames", 4)
    videos = gpu_suite.folder_videos(source, 3, 3, 2, tmp_path / "work")
    assert len(videos) == 3 and all(v is videos[0] for v in videos)
    assert len(videos[0].frames) == 2  # the first --num-frames, linked into the work folder
    assert [p.name for p in gpu_suite.jpeg_paths(videos[0].folder)] == ["00000.jpg", "00001.jpg"]
    assert videos[0].clicks == gpu_suite.grid_clicks(3, 64, 48)
    streams = gpu_suite.plan_streams(videos, 3)
    assert [list(clicks) for _, _, clicks in streams] == [[1], [2], [3]]
    (tmp_path / "frames" / "cover.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="named by their number"):
        gpu_suite.jpeg_paths(source)
    with pytest.raises(ValueError, match="no JPEG frames"):
        gpu_suite.jpeg_paths(tmp_path / "work")


def test_table_lists_fps_and_reasons():
    record = {
        "systems": {
            "official": {"label": "a", "status": "measured"},
            "tracker": {"label": "b", "status": "measured"},
            "served": {"label": "c", "status": "unavailable", "reason": "no server here"},
        },
        "cases": [
            {"system": "official", "objects": 1, "streams": 1, "fps": 1.5},
            {"system": "tracker", "objects": 1, "streams": 1, "fps": 2.25},
            {"system": "tracker", "objects": 1, "streams": 2, "fps": 4.0},
        ],
    }
    lines = gpu_suite.table(record).splitlines()
    assert lines[0].split() == ["objects", "videos", "official", "tracker"]
    assert lines[1].split() == ["1", "1", "1.50", "2.25"]
    assert lines[2].split() == ["1", "2", "-", "4.00"]
    assert lines[-1] == "served: unavailable: no server here"


def test_weights_are_asked_for(tmp_path):
    """Without a checkpoint file or the official one, the suite stops (no silent random)."""
    from sam2_triton.configs import get_model
    from sam2_triton.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        gpu_suite.suite_weights(get_model("tiny"), str(tmp_path / "missing.pt"), False, tmp_path)


@pytest.mark.model
def test_cpu_version_tiny(tmp_path):
    """The CPU version with random weights, 2 frames: the official predictor and this tracker
    measured on the same frames; vos_optimized and TensorRT recorded with their reason."""
    json_path = tmp_path / "gpu_suite.json"
    argv = ["--device", "cpu", "--random-weights", "--num-frames", "2", "--size", "160x96"]
    argv += ["--objects", "1", "2", "--streams", "1", "2", "--warmup-runs", "0"]
    argv += ["--systems", "official", "official_vos", "tracker", "tracker_tensorrt"]
    argv += ["--work-dir", str(tmp_path / "work"), "--json", str(json_path)]
    with pytest.warns(UserWarning, match="RANDOM weights"):
        gpu_suite.main(argv)
    record = json.loads(json_path.read_text())
    assert record["model"] == "tiny" and record["weights"] == "random"
    assert record["device"] == "cpu" and record["machine"] and record["date"]
    assert record["size"] == "160x96" and record["frames_per_video"] == 2
    systems = record["systems"]
    assert systems["official"]["status"] == "measured", systems["official"]
    assert systems["tracker"]["status"] == "measured", systems["tracker"]
    assert systems["official_vos"]["status"] == "unavailable"
    assert "CUDA" in systems["official_vos"]["reason"]
    assert systems["tracker_tensorrt"]["status"] in ("unavailable", "measured")
    if systems["tracker_tensorrt"]["status"] == "unavailable":
        assert "TensorRT" in systems["tracker_tensorrt"]["reason"]
    cases = record["cases"]
    for case in cases:
        assert set(case) == CASE_FIELDS
        assert case["fps"] > 0 and len(case["runs_fps"]) == record["repeat"] == 1
    measured = {(c["system"], c["objects"], c["streams"]): c["frames"] for c in cases}
    expected = {(1, 1): 1, (2, 1): 1, (1, 2): 2}  # frames after the prompted one, all videos
    for system in ("official", "tracker"):
        assert {k[1:]: v for k, v in measured.items() if k[0] == system} == expected
    assert (tmp_path / "gpu_suite.png").is_file()


@pytest.mark.served
def test_cpu_version_served_part(served, tmp_path):
    """The suite's served part on the session's server (its test export): one client per
    video, every case of the report measured with its fields."""
    json_path = tmp_path / "gpu_suite.json"
    argv = ["--device", "cpu", "--random-weights", "--num-frames", "2", "--size", "160x96"]
    argv += ["--objects", "1", "2", "--streams", "1", "2", "--warmup-runs", "0"]
    argv += ["--systems", "served", "--served-url", served.grpc_url, "--protocol", "grpc"]
    argv += ["--work-dir", str(tmp_path / "work"), "--json", str(json_path)]
    with pytest.warns(UserWarning, match="RANDOM weights"):
        gpu_suite.main(argv)
    record = json.loads(json_path.read_text())
    entry = record["systems"]["served"]
    assert entry["status"] == "measured", entry
    assert served.grpc_url in entry["description"]
    frames = {(c["objects"], c["streams"]): c["frames"] for c in record["cases"]}
    assert frames == {(1, 1): 1, (2, 1): 1, (1, 2): 2}
    for case in record["cases"]:
        assert set(case) == CASE_FIELDS and case["system"] == "served" and case["fps"] > 0
