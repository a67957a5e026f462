"""The soak tool against the shared test server, briefly: good requests succeed, bad ones are
refused with INVALID_ARG, nothing else happens, and the server's memory is sampled.

The 20-minute run whose figures the README reports is `make soak` (benchmarks/soak.py).
"""

from __future__ import annotations

import os

import pytest

from sam2_triton.benchmarks.report import plot_soak
from sam2_triton.benchmarks.soak import is_refusal, memory_growth, run_soak, server_memory
from sam2_triton.client import Sam2ClientError

SOAK_SECONDS = 45.0


@pytest.mark.parametrize(
    "status, message, model, refused",
    [
        ("400", "segment: no prompt", "segment", True),
        ("StatusCode.INVALID_ARGUMENT", "segment: no prompt", "segment", True),
        ("500", "segment: internal error: boom", "segment", False),
        ("StatusCode.UNAVAILABLE", "server at x is not reachable over grpc", "segment", False),
        (None, "track_video: frame 3 is 120x168 but ...", "track_video", True),  # gRPC stream
        (None, "track_video: internal error: KeyError: 3", "track_video", False),
        (None, "track_video: no answer from the server at x within 5 s", "track_video", False),
        (None, "server at x is not reachable over grpc (refused)", None, False),
    ],
)
def test_refusals_are_told_from_failures(status, message, model, refused):
    assert is_refusal(Sam2ClientError(message, status=status, model=model)) is refused


def test_memory_growth_reads_the_second_half():
    flat_then_rising = [
        {"t_s": 60.0 * i, "total_mib": 100.0 + max(0, i - 5) * 3} for i in range(11)
    ]
    assert memory_growth(flat_then_rising) == pytest.approx(3.0)
    flat = [{"t_s": 60.0 * i, "total_mib": 500.0} for i in range(11)]
    assert memory_growth(flat) == pytest.approx(0.0, abs=1e-9)
    assert memory_growth(flat[:1]) == 0.0


def test_memory_of_a_process_without_stubs():
    memory = server_memory(os.getpid())
    assert list(memory) == ["tritonserver"] and memory["tritonserver"] > 10 * 2**20


def test_soak_plot(tmp_path):
    record = {
        "model": "tiny",
        "machine": "test machine",
        "date": "2026-12-01",
        "duration_s": 120.0,
        "requests": 40,
        "unexpected": 0,
        "latency": {
            "segment": {"p50_ms": 900.0, "p99_ms": 1500.0},
            "frame": {"p50_ms": 2000.0, "p99_ms": 2600.0},
        },
        "memory": {
            "samples": [
                {"t_s": 5.0 * i, "total_mib": 3000.0 + i, "by_process_mib": {"tritonserver": 700.0}}
                for i in range(5)
            ]
        },
    }
    path = plot_soak(record, tmp_path / "soak.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    del record["memory"]["samples"][:]
    with pytest.raises(ValueError, match="no memory samples"):
        plot_soak(record, tmp_path / "empty.png")


def test_short_soak_has_nothing_unexpected(served):
    pid = served.server.pid
    record = run_soak(
        served.http_url,
        served.grpc_url,
        pid,
        duration_s=SOAK_SECONDS,
        image_workers=1,
        video_workers=1,
        sample_s=3.0,
        seed=1,
    )
    assert record["unexpected"] == 0, record["unexpected_messages"]
    outcomes = record["outcomes"]
    assert sum(v.get("ok", 0) for v in outcomes.values()) > 0
    assert sum(v.get("refused", 0) for k, v in outcomes.items() if k.startswith("bad:")) > 0
    assert all("ok" not in v for k, v in outcomes.items() if k.startswith("bad:"))
    assert outcomes["frame"].get("ok", 0) > 0, "no video frame was tracked"
    samples = record["memory"]["samples"]
    assert len(samples) >= 2
    # every Python-backend model has a stub process under tritonserver, and each is sampled
    labels = set(samples[-1]["by_process_mib"])
    assert {"tritonserver", "track_video", "segment_interactive"} <= labels
    assert served.server.is_running()


def test_server_memory_covers_every_model(served):
    memory = server_memory(served.server.pid)
    assert {"tritonserver", "track_video", "image_encoder", "postprocess_masks"} <= set(memory)
    assert all(value > 0 for value in memory.values())
