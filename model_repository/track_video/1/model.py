"""Video object tracking: one Triton sequence (correlation id: integer or string) per video, one
request per frame.

Each sequence's memory lives in this instance (python_backend/video: VideoTracker per sequence
in a SequenceStore); the networks are called through BLS. Sequences idle longer than
`idle_timeout_s` are evicted here, since Triton does not tell the model when it drops one.
Each sequence chooses at START what its answers hold (full-size masks, RLE, smaller masks or
logits: python_backend/video/answers.py). See config.pbtxt and model_repository/README.md for
the tensors; design notes: docs/serving.md.
"""

import json
from pathlib import Path

from sam2_triton.configs import RequestLimits
from sam2_triton.export.metadata import load_metadata
from sam2_triton.python_backend.errors import InputError
from sam2_triton.python_backend.host_threads import limit_host_blas_threads
from sam2_triton.python_backend.metrics import TRACK_VIDEO_METRICS
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.triton_io import (
    BlsVideoNetworks,
    image_of,
    model_metrics,
    model_parameters,
    optional_input,
    respond_outcomes,
    sequence_controls,
    serving_device,
)
from sam2_triton.python_backend.video.batching import BatchLimits
from sam2_triton.python_backend.video.frame_requests import (
    PROMPT_INPUTS,
    START_ONLY_INPUTS,
    FrameRequest,
    VideoRequestHandler,
    parse_frame_request,
)
from sam2_triton.python_backend.video.sequences import (
    IdleEvictor,
    SequenceStore,
    VideoSettings,
)
from sam2_triton.python_backend.video.snapshots import model_identity
from sam2_triton.python_backend.video.tracker import VideoTracker
from sam2_triton.wire import FRAME_INDEX, IMAGE, IMAGE_RAW, REMOVE_OBJ_IDS, TAKE_SNAPSHOT

OPTIONAL_INPUTS = (FRAME_INDEX, REMOVE_OBJ_IDS, TAKE_SNAPSHOT) + PROMPT_INPUTS + START_ONLY_INPUTS
REQUEST_INPUTS = (IMAGE, IMAGE_RAW) + OPTIONAL_INPUTS
EVICTION_CHECKS_PER_TIMEOUT = 4


class TritonPythonModel:
    def initialize(self, args):
        limit_host_blas_threads()  # numpy's BLAS threads would fight torch's for the cores
        params = model_parameters(args)
        self.limits = RequestLimits.from_parameters(params)
        self.samurai_defaults = SamuraiSettings(**json.loads(params["samurai_defaults"]))
        settings = VideoSettings.from_mapping(params)
        metadata = load_metadata(Path(args["model_repository"]) / args["model_version"])
        # the sequences' tensors live on the serving device (GPU profiles: this instance's GPU)
        networks = BlsVideoNetworks(serving_device(args, params))

        def make_tracker(options):
            return VideoTracker(
                networks,
                metadata,
                num_frames=options.num_frames,
                preprocessing=settings.preprocessing,
                memory_storage=settings.memory_storage,
                hole_filling=settings.hole_filling,
                samurai=options.samurai,
                # the tracker upscales to the frame's size only for full-size answers; the
                # handler checks every answer against the budget in its own format
                max_mask_bytes=self.limits.max_mask_bytes if options.answer.full_size else None,
            )

        self.store = SequenceStore(make_tracker, settings)
        # snapshots carry (and restores check) the model, its weights and the precision
        model = model_identity(metadata, params.get("precision", "fp32"))
        limits = json.loads(params.get("video_batch_limits", "{}"))
        self.handler = VideoRequestHandler(
            self.store, settings, self.limits, model, BatchLimits(**limits)
        )
        # max_batch_size > 0: every input and output has Triton's batch axis, 1 per request
        self.batched = json.loads(args["model_config"]).get("max_batch_size", 0) > 0
        self.evictor = IdleEvictor(
            self.store, settings.idle_timeout_s / EVICTION_CHECKS_PER_TIMEOUT
        ).start()
        self.metrics = model_metrics(TRACK_VIDEO_METRICS, "track_video")
        self.frames = 0  # frames tracked or corrected (the frames counter's total)

    def _parse(self, request) -> FrameRequest | Exception:
        """The request parsed (its inputs without Triton's batch axis), or why not."""
        try:
            sequence_id, start, end = sequence_controls(request)
        except Exception as exc:
            return exc
        try:
            arrays = {name: optional_input(request, name) for name in REQUEST_INPUTS}
            if self.batched:  # [1, ...]: one request's row of the batch
                arrays = {name: None if a is None else a[0] for name, a in arrays.items()}
            raw, encoded = arrays.pop(IMAGE_RAW), arrays.pop(IMAGE)
            image = None if raw is None and encoded is None else image_of(encoded, raw, self.limits)
            return parse_frame_request(
                sequence_id, start, end, arrays, image, self.samurai_defaults
            )
        except InputError as exc:
            self.handler.refused(sequence_id, start, end, exc)
            return exc

    def execute(self, requests):
        """Every request of the batch (frames of different sequences are tracked together:
        VideoRequestHandler.respond_all); a refused request fails alone."""
        parsed = [self._parse(request) for request in requests]
        answers = iter(self.handler.respond_all([p for p in parsed if isinstance(p, FrameRequest)]))
        outcomes = []
        for request in parsed:
            outcome = next(answers) if isinstance(request, FrameRequest) else request
            if isinstance(request, FrameRequest) and not isinstance(outcome, Exception):
                if request.image is not None or request.prompted_ids:
                    self.frames += 1
                if self.batched:
                    outcome = {name: array[None] for name, array in outcome.items()}
            outcomes.append(outcome)
        responses = respond_outcomes(outcomes, "track_video", self.metrics)
        self._publish()
        return responses

    def _publish(self) -> None:
        """The metrics after a batch (evictions by the evictor thread show with the next)."""
        self.metrics.set("sam2_video_sequences", len(self.store))
        self.metrics.set("sam2_video_objects", self.store.num_objects)
        self.metrics.set("sam2_video_state_bytes", self.store.nbytes)
        self.metrics.sync_counter("sam2_video_frames_total", self.frames)
        self.metrics.sync_counter("sam2_video_evictions_total", self.store.evictions)
        self.metrics.sync_counter(
            "sam2_video_frames_batched_total", self.handler.batch_stats.shared
        )

    def finalize(self):
        self.evictor.stop()
