"""benchmarks/report.py: every benchmark's plot from synthetic records (no model, no server)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from PIL import Image

from sam2_triton.benchmarks import report
from sam2_triton.benchmarks.perf_analyzer import concurrency_range

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER = {"model": "tiny", "machine": "test CPU, 2 cores, CPU only", "date": "2026-12-01"}


def summary(p50: float) -> dict[str, float]:
    return {"p50_ms": p50, "p95_ms": p50 * 1.1}


RECORDS = {
    "networks": (
        report.plot_networks,
        {
            **HEADER,
            "objects": 1,
            "repeat": 5,
            "networks": {
                "image_encoder": {"onnxruntime": summary(3000), "pytorch": summary(3100)},
                "mask_decoder": {"onnxruntime": summary(70), "pytorch": summary(110)},
            },
        },
    ),
    "memory_attention": (
        report.plot_memory_attention,
        {
            **HEADER,
            "memories": 7,
            "pointers": 16,
            "batches": {
                "1": {"onnxruntime export": summary(3000), "pytorch official": summary(4200)},
                "3": {"onnxruntime export": summary(8000), "pytorch official": summary(12000)},
            },
        },
    ),
    "image_serving": (
        report.plot_image_serving,
        {
            **HEADER,
            "image": "1280x720",
            "protocol": "grpc",
            "reference_one_shot": summary(3400),
            "served_one_shot": summary(3380),
            "reference_click": summary(148),
            "served_click": summary(89),
        },
    ),
    "video_tracking": (
        report.plot_video_tracking,
        {
            **HEADER,
            "frames": 6,
            "size": "640x480",
            "cases": [
                {"objects": 1, "sequences": 1, "reference_fps": 0.2, "served_fps": 0.19},
                {"objects": 3, "sequences": 1, "reference_fps": 0.09, "served_fps": 0.1},
                {"objects": 1, "sequences": 4, "reference_fps": 0.17, "served_fps": 0.18},
            ],
        },
    ),
    "orchestration": (
        report.plot_orchestration,
        {
            **HEADER,
            "size": "1280x720",
            "preprocessing": "device",
            "cases": [
                {
                    "device": "cpu",
                    "mode": mode,
                    "objects": objects,
                    "answer": answer,
                    "host_ms_per_frame": 20.0 + objects * (3.0 if answer == "full" else 1.0),
                    "transfers_per_frame": 3.0 if answer == "full" else 2.0,
                }
                for mode in ("sam2", "samurai")
                for answer in ("full", "compact")
                for objects in (1, 4, 16)
            ],
        },
    ),
    "gpu_suite": (
        report.plot_gpu_suite,
        {
            **HEADER,
            "weights": "random",
            "device": "cuda:0",
            "size": "960x540",
            "frames_per_video": 30,
            "systems": {
                "official": {"label": "SAM2VideoPredictor (eager)", "status": "measured"},
                "tracker": {"label": "VideoTracker, PyTorch", "status": "measured"},
                "served": {"label": "track_video", "status": "unavailable", "reason": "none"},
            },
            "cases": [
                {"system": system, "objects": objects, "streams": streams, "fps": fps}
                for system, base in (("official", 40.0), ("tracker", 90.0))
                for objects, streams, fps in (
                    (1, 1, base),
                    (3, 1, base / 2),
                    (8, 1, base / 5),
                    (1, 4, base * 2),
                    (1, 16, base * 3),
                )
            ],
        },
    ),
    "perf_analyzer": (
        report.plot_perf_analyzer,
        {
            **HEADER,
            "served_model": "segment",
            "input": "synthetic 640x480 PNG",
            "rows": [
                {
                    "concurrency": c,
                    "throughput_infer_per_s": 0.3 * c,
                    "p50_ms": 3000.0 * c,
                    "p99_ms": 3500.0 * c,
                }
                for c in (1, 2, 3)
            ],
        },
    ),
}


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= 400


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_plot_writes_a_png(kind, tmp_path):
    plot, record = RECORDS[kind]
    path = plot(record, tmp_path / f"{kind}.png")
    assert path == tmp_path / f"{kind}.png"
    assert_png(path)


@pytest.mark.parametrize(
    "kind, keys",
    [
        ("networks", ("networks", "mask_decoder", "pytorch", "p95_ms")),
        ("networks", ("model",)),
        ("memory_attention", ("batches", "3", "pytorch official")),
        ("image_serving", ("served_click",)),
        ("image_serving", ("date",)),
        ("video_tracking", ("cases", 1, "served_fps")),
        ("perf_analyzer", ("rows", 2, "p99_ms")),
        ("perf_analyzer", ("machine",)),
        ("orchestration", ("cases", 3, "transfers_per_frame")),
        ("orchestration", ("cases", 0, "device")),
        ("gpu_suite", ("cases", 4, "fps")),
        ("gpu_suite", ("systems", "tracker", "label")),
        ("gpu_suite", ("frames_per_video",)),
    ],
)
def test_plot_refuses_a_record_without_a_required_field(kind, keys, tmp_path):
    plot, record = RECORDS[kind]
    broken = copy.deepcopy(record)
    parent = broken
    for key in keys[:-1]:
        parent = parent[key]
    del parent[keys[-1]]
    path = tmp_path / "refused.png"
    with pytest.raises(ValueError, match=rf"{kind} record lacks required field .*{keys[-1]!r}"):
        plot(broken, path)
    assert not path.exists()


def test_plot_refuses_a_field_that_is_not_a_number(tmp_path):
    plot, record = RECORDS["image_serving"]
    broken = copy.deepcopy(record)
    broken["served_one_shot"]["p50_ms"] = "fast"
    with pytest.raises(ValueError, match="'served_one_shot' -> 'p50_ms' is 'fast', not a number"):
        plot(broken, tmp_path / "refused.png")


@pytest.mark.parametrize(
    "kind, key",
    [
        ("networks", "networks"),
        ("memory_attention", "batches"),
        ("video_tracking", "cases"),
        ("orchestration", "cases"),
        ("gpu_suite", "cases"),
    ],
)
def test_plot_refuses_an_empty_record(kind, key, tmp_path):
    plot, record = RECORDS[kind]
    empty = {**record, key: {}}
    with pytest.raises(ValueError, match=f"{kind} record has no"):
        plot(empty, tmp_path / "refused.png")


def test_video_plot_with_objects_only(tmp_path):
    """--cases 1,3 (no sequences case): one panel, still a PNG."""
    plot, record = RECORDS["video_tracking"]
    only_objects = {**record, "cases": record["cases"][:2]}
    assert_png(plot(only_objects, tmp_path / "video.png"))


def test_gpu_suite_plot_with_one_video_only(tmp_path):
    """A run without the videos sweep (--streams 1): one panel, still a PNG."""
    plot, record = RECORDS["gpu_suite"]
    one_video = {**record, "cases": [c for c in record["cases"] if c["streams"] == 1]}
    assert_png(plot(one_video, tmp_path / "suite.png"))


def test_write_report_puts_the_plot_next_to_the_json(tmp_path):
    plot, record = RECORDS["networks"]
    json_path = tmp_path / "out" / "networks.json"
    png = report.write_report(record, plot, json_path, None)
    assert png == tmp_path / "out" / "networks.png"
    assert json.loads(json_path.read_text()) == record
    assert_png(png)
    explicit = report.write_report(record, plot, None, tmp_path / "elsewhere.png")
    assert explicit == tmp_path / "elsewhere.png" and explicit.is_file()
    assert report.write_report(record, plot, None, None) is None


def test_output_arguments_default_plot_path():
    import argparse

    parser = argparse.ArgumentParser()
    report.add_output_arguments(parser)
    args = parser.parse_args(["--json", "docs/benchmarks/networks.json"])
    assert report.plot_path(args.json, args.plot) == Path("docs/benchmarks/networks.png")
    args = parser.parse_args(["--json", "a.json", "--plot", "b.png"])
    assert report.plot_path(args.json, args.plot) == Path("b.png")


def test_record_header_names_model_machine_and_date():
    header = report.record_header("tiny", machine="a machine")
    assert header["model"] == "tiny" and header["machine"] == "a machine"
    assert len(header["date"]) == 10 and header["date"][4] == "-"
    machine = report.machine_description()
    assert "cores" in machine and "GiB" in machine


def test_read_perf_analyzer_csv(tmp_path):
    """perf_analyzer's -f CSV (latencies in microseconds) -> rows in milliseconds."""
    path = tmp_path / "perf.csv"
    path.write_text(
        "Concurrency,Inferences/Second,Client Send,p50 latency,p90 latency,p95 latency,"
        "p99 latency,Avg latency\n"
        "1,0.3,10,3000000,3100000,3200000,3300000,3050000\n"
        "2,0.5,12,4000000,4100000,4200000,4400000,4050000\n"
    )
    rows = report.read_perf_analyzer_csv(path)
    assert rows == [
        {
            "concurrency": 1,
            "throughput_infer_per_s": 0.3,
            "p50_ms": 3000.0,
            "p90_ms": 3100.0,
            "p95_ms": 3200.0,
            "p99_ms": 3300.0,
        },
        {
            "concurrency": 2,
            "throughput_infer_per_s": 0.5,
            "p50_ms": 4000.0,
            "p90_ms": 4100.0,
            "p95_ms": 4200.0,
            "p99_ms": 4400.0,
        },
    ]
    path.write_text("Concurrency,Inferences/Second\n1,0.3\n")
    with pytest.raises(ValueError, match="not a perf_analyzer CSV row"):
        report.read_perf_analyzer_csv(path)


@pytest.mark.parametrize(
    "value, expected", [(2, "2:2"), ("1", "1:1"), ("1:4", "1:4"), ("1:8:2", "1:8:2")]
)
def test_concurrency_range(value, expected):
    assert concurrency_range(value) == expected


@pytest.mark.parametrize("value", ["0", "4:1", "a", "1:2:3:4", ""])
def test_concurrency_range_refuses(value):
    with pytest.raises(ValueError, match="START:END"):
        concurrency_range(value)


def test_redraw_a_saved_record(tmp_path):
    """python -m sam2_triton.benchmarks.report KIND JSON redraws the PNG next to the JSON."""
    _, record = RECORDS["video_tracking"]
    saved = tmp_path / "video_tracking.json"
    saved.write_text(json.dumps(record))
    report.main(["video_tracking", str(saved)])
    assert_png(tmp_path / "video_tracking.png")
    with pytest.raises(ValueError, match="networks record lacks required field 'networks'"):
        report.main(["networks", str(saved), "--plot", str(tmp_path / "wrong.png")])


def test_perf_analyzer_main_writes_csv_json_and_plot(tmp_path, monkeypatch):
    """perf_analyzer.py --json: the CSV defaults next to the JSON, its rows land in the record
    with the served repository's model, and the plot is drawn (perf_analyzer itself faked)."""
    import subprocess

    from sam2_triton.benchmarks import perf_analyzer
    from sam2_triton.serving.repository import MARKER_FILE

    def fake_run(url, protocol, image, point, csv, concurrency, request_count):
        assert concurrency == "1:2" and csv == tmp_path / "out" / "segment.csv"
        csv.write_text(
            "Concurrency,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency\n"
            "1,0.3,3000000,3100000,3200000,3300000\n2,0.5,4000000,4100000,4200000,4400000\n"
        )
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(perf_analyzer, "run", fake_run)
    repository = tmp_path / "repository"
    repository.mkdir()
    marker = {"model": "small", "profile": "cpu", "checkpoint": {"random_weights": True}}
    (repository / MARKER_FILE).write_text(json.dumps(marker))
    json_path = tmp_path / "out" / "segment.json"
    argv = ["--concurrency", "1:2", "--repository", str(repository), "--json", str(json_path)]
    assert perf_analyzer.main(argv) == 0
    record = json.loads(json_path.read_text())
    assert (record["model"], record["weights"], record["profile"]) == ("small", "random", "cpu")
    assert [row["concurrency"] for row in record["rows"]] == [1, 2]
    assert record["rows"][1]["p99_ms"] == 4400.0
    assert_png(tmp_path / "out" / "segment.png")
    with pytest.raises(FileNotFoundError, match="not a repository"):
        perf_analyzer.main(["--repository", str(tmp_path), "--json", str(json_path)])
