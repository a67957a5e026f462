"""perf_analyzer (from tritonclient[all] 2.51) drives the `segment` ensemble with real image
bytes and completes; the command is benchmarks/perf_analyzer.py."""

from __future__ import annotations

import csv

from sam2_triton.benchmarks.perf_analyzer import run, synthetic_image


def test_perf_analyzer_runs_against_segment_ensemble(served, tmp_path):
    report = tmp_path / "perf.csv"
    result = run(
        served.grpc_url,
        "grpc",
        synthetic_image(320, 240),
        (160, 120),
        csv=report,
        request_count=3,
        timeout_s=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Inferences/Second" in result.stdout or "Throughput" in result.stdout, result.stdout[
        -2000:
    ]
    rows = list(csv.DictReader(report.open()))
    assert rows and float(rows[0]["Inferences/Second"]) > 0
    assert float(rows[0]["p50 latency"]) > 0


def test_perf_analyzer_drives_track_video_sequences(served, tmp_path):
    """Sequences of 3 real PNG frames (START .. END), a click on frame 0: each tracked frame
    runs the networks, so the window is small (the test checks the command, not the speed)."""
    from sam2_triton.benchmarks.perf_analyzer import run_sequences, synthetic_frames

    report = tmp_path / "perf_video.csv"
    result = run_sequences(
        served.grpc_url,
        "grpc",
        synthetic_frames(3, 160, 120),
        (80, 60),
        sequence_length=3,
        csv=report,
        request_count=3,
        timeout_s=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = list(csv.DictReader(report.open()))
    assert rows and float(rows[0]["Inferences/Second"]) > 0
