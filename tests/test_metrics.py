"""ModelMetrics over a stand-in of Triton's custom-metrics API (the served test reads them
from the metrics port: tests/test_video_serving.py)."""

from __future__ import annotations

import pytest

from sam2_triton.python_backend.errors import InputError, ServerFullError, UnknownSequenceError
from sam2_triton.python_backend.metrics import (
    EMBEDDING_CACHE_METRICS,
    REFUSAL_REASONS,
    TRACK_VIDEO_METRICS,
    ModelMetrics,
)


class _Metric:
    def __init__(self, labels):
        self.labels = labels
        self.value = 0.0

    def set(self, value):
        self.value = value

    def increment(self, value):
        assert value >= 0
        self.value += value


class _Family:
    COUNTER, GAUGE = "COUNTER", "GAUGE"
    created: list[_Family] = []

    def __init__(self, name, description, kind):
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[_Metric] = []
        _Family.created.append(self)

    def Metric(self, labels):  # noqa: N802 (Triton's name)
        metric = _Metric(labels)
        self.metrics.append(metric)
        return metric


class _Backend:
    MetricFamily = _Family


@pytest.fixture
def families():
    _Family.created = []
    return _Family.created


def test_families_are_created_once_with_their_kinds(families):
    ModelMetrics(_Backend, TRACK_VIDEO_METRICS, "track_video")
    kinds = {f.name: f.kind for f in families}
    assert kinds["sam2_video_sequences"] == "GAUGE"
    assert kinds["sam2_video_frames_total"] == "COUNTER"
    assert kinds["sam2_refused_requests_total"] == "COUNTER"
    assert len(families) == len(TRACK_VIDEO_METRICS)
    assert all(
        spec.name.endswith("_total") == (spec.kind == "counter")
        for spec in TRACK_VIDEO_METRICS + EMBEDDING_CACHE_METRICS
    )


def test_values_and_labels(families):
    metrics = ModelMetrics(_Backend, TRACK_VIDEO_METRICS, "track_video")
    metrics.set("sam2_video_sequences", 3)
    metrics.set("sam2_video_sequences", 2)
    metrics.increment("sam2_video_frames_total")
    metrics.increment("sam2_video_frames_total", 4)
    metrics.refused("server_full")
    metrics.refused("server_full")
    metrics.refused("invalid_request")
    by_name = {f.name: f for f in families}
    (sequences,) = by_name["sam2_video_sequences"].metrics
    assert sequences.value == 2 and sequences.labels == {"model": "track_video"}
    assert by_name["sam2_video_frames_total"].metrics[0].value == 5
    refused = {m.labels["reason"]: m.value for m in by_name["sam2_refused_requests_total"].metrics}
    assert refused == {"server_full": 2, "invalid_request": 1}


def test_misuse_is_an_error(families):
    metrics = ModelMetrics(_Backend, TRACK_VIDEO_METRICS, "track_video")
    with pytest.raises(ValueError, match="counter"):
        metrics.set("sam2_video_frames_total", 1)
    with pytest.raises(ValueError, match="gauge"):
        metrics.increment("sam2_video_sequences")
    with pytest.raises(ValueError, match="labels"):
        metrics.set("sam2_video_sequences", 1, reason="x")
    with pytest.raises(ValueError, match="reason"):
        metrics.refused("bored")


def test_every_input_error_names_a_known_reason():
    for error in (InputError, ServerFullError, UnknownSequenceError):
        assert error.reason in REFUSAL_REASONS
        assert issubclass(error, InputError)


def test_grafana_dashboard_shows_every_metric_and_only_known_ones():
    import json
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "sam2-triton.json"
    dashboard = json.loads(path.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in expressions for name in re.findall(r"\b(sam2_[a-z_]+)\b", e)}
    ours = {spec.name for spec in TRACK_VIDEO_METRICS + EMBEDDING_CACHE_METRICS}
    assert used == ours
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
