"""Prometheus metrics of the stateful models, published through Triton's custom-metrics API.

Triton serves them on its metrics port next to its own (`nv_inference_*`). Each model creates
its families once (`ModelMetrics(backend, SPECS)`: `backend` is `triton_python_backend_utils`
inside Triton, a stand-in in the unit tests) and updates them with `set` / `increment`; label
values are created on first use. Names, kinds and labels are listed once, here; what each
means and the Grafana dashboard over them: docs/serving.md#metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

COUNTER, GAUGE = "counter", "gauge"


@dataclass(frozen=True)
class MetricSpec:
    name: str  # Prometheus name (counters end in _total)
    kind: str  # COUNTER or GAUGE
    description: str
    labels: tuple[str, ...] = ("model",)


# Why a request was refused (InputError.reason; errors raised elsewhere are "internal").
REFUSAL_REASONS = (
    "invalid_request",
    "server_full",
    "unknown_sequence",
    "snapshot_refused",
    "internal",
)

REFUSED = MetricSpec(
    "sam2_refused_requests_total",
    COUNTER,
    "Requests answered with an error, by model and reason",
    ("model", "reason"),
)
TRACK_VIDEO_METRICS = (
    MetricSpec("sam2_video_sequences", GAUGE, "Video sequences held by track_video"),
    MetricSpec("sam2_video_objects", GAUGE, "Objects tracked over all held sequences"),
    MetricSpec("sam2_video_state_bytes", GAUGE, "Bytes of sequence state held by track_video"),
    MetricSpec("sam2_video_frames_total", COUNTER, "Frames tracked or corrected"),
    MetricSpec("sam2_video_evictions_total", COUNTER, "Sequences dropped after the idle timeout"),
    MetricSpec(
        "sam2_video_frames_batched_total",
        COUNTER,
        "Frames tracked in one batch with frames of other sequences",
    ),
    REFUSED,
)
EMBEDDING_CACHE_METRICS = (
    MetricSpec("sam2_embedding_cache_bytes", GAUGE, "Bytes of embeddings cached"),
    MetricSpec("sam2_embedding_cache_entries", GAUGE, "Encoded images cached"),
    MetricSpec("sam2_embedding_cache_hits_total", COUNTER, "IMAGE_ID requests found in cache"),
    MetricSpec(
        "sam2_embedding_cache_misses_total", COUNTER, "IMAGE_ID requests not found in cache"
    ),
    MetricSpec(
        "sam2_embedding_cache_evictions_total", COUNTER, "Entries evicted to stay in the bound"
    ),
    REFUSED,
)


class ModelMetrics:
    """The metric families of one model, updated by name with label values."""

    def __init__(self, backend: Any, specs: Sequence[MetricSpec], model: str) -> None:
        self.model = model
        self.specs = {spec.name: spec for spec in specs}
        kinds = {COUNTER: backend.MetricFamily.COUNTER, GAUGE: backend.MetricFamily.GAUGE}
        self._families = {
            spec.name: backend.MetricFamily(
                name=spec.name, description=spec.description, kind=kinds[spec.kind]
            )
            for spec in specs
        }
        self._metrics: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._totals: dict[str, float] = {}

    def _metric(self, name: str, labels: Mapping[str, str]) -> Any:
        spec = self.specs[name]
        values = {"model": self.model, **labels}
        if set(values) != set(spec.labels):
            raise ValueError(f"{name} takes labels {spec.labels}, got {sorted(values)}")
        key = (name, tuple(str(values[label]) for label in spec.labels))
        metric = self._metrics.get(key)
        if metric is None:
            metric = self._families[name].Metric(labels=dict(zip(spec.labels, key[1])))
            self._metrics[key] = metric
        return metric

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        if self.specs[name].kind != GAUGE:
            raise ValueError(f"{name} is a counter: increment it")
        self._metric(name, labels).set(float(value))

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add `value` (>= 0) to a counter."""
        if self.specs[name].kind != COUNTER:
            raise ValueError(f"{name} is a gauge: set it")
        if value:
            self._metric(name, labels).increment(float(value))

    def sync_counter(self, name: str, total: float) -> None:
        """Bring a counter (no labels but the model) up to `total`, a count kept elsewhere
        (e.g. the cache's evictions): adds what grew since the last call."""
        grown = float(total) - self._totals.get(name, 0.0)
        if grown < 0:
            raise ValueError(f"{name}: the total went down ({total})")
        self._totals[name] = float(total)
        self.increment(name, grown)

    def refused(self, reason: str) -> None:
        """Count one refused request (reason one of REFUSAL_REASONS)."""
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        self.increment(REFUSED.name, reason=reason)
