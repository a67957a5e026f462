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
from sam2_triton.python_backend.metrics import TRACK_VIDEO_METRICS
from sam2_triton.python_backend.samurai import SamuraiSettings
from sam2_triton.python_backend.triton_io import (
    BlsVideoNetworks,
    model_metrics,
    model_parameters,
    optional_input,
    read_optional_image,
    respond_each,
    sequence_controls,
)
from sam2_triton.python_backend.video.frame_requests import (
    PROMPT_INPUTS,
    START_ONLY_INPUTS,
    VideoRequestHandler,
    parse_frame_request,
)
from sam2_triton.python_backend.video.sequences import (
    IdleEvictor,
    SequenceStore,
    VideoSettings,
)
from sam2_triton.python_backend.video.tracker import VideoTracker
from sam2_triton.wire import FRAME_INDEX, REMOVE_OBJ_IDS

OPTIONAL_INPUTS = (FRAME_INDEX, REMOVE_OBJ_IDS) + PROMPT_INPUTS + START_ONLY_INPUTS
EVICTION_CHECKS_PER_TIMEOUT = 4


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        self.limits = RequestLimits.from_parameters(params)
        self.samurai_defaults = SamuraiSettings(**json.loads(params["samurai_defaults"]))
        settings = VideoSettings.from_mapping(params)
        metadata = load_metadata(Path(args["model_repository"]) / args["model_version"])
        networks = BlsVideoNetworks()

        def make_tracker(options):
            return VideoTracker(
                networks,
                metadata,
                num_frames=options.num_frames,
                preprocessing=settings.preprocessing,
                memory_storage=settings.memory_storage,
                samurai=options.samurai,
                # the tracker upscales to the frame's size only for full-size answers; the
                # handler checks every answer against the budget in its own format
                max_mask_bytes=self.limits.max_mask_bytes if options.answer.full_size else None,
            )

        self.store = SequenceStore(make_tracker, settings)
        self.handler = VideoRequestHandler(self.store, settings, self.limits)
        self.evictor = IdleEvictor(
            self.store, settings.idle_timeout_s / EVICTION_CHECKS_PER_TIMEOUT
        ).start()
        self.metrics = model_metrics(TRACK_VIDEO_METRICS, "track_video")
        self.frames = 0  # frames tracked or corrected (the frames counter's total)

    def _handle(self, request):
        sequence_id, start, end = sequence_controls(request)
        try:
            image = read_optional_image(request, self.limits)
            tensors = {name: optional_input(request, name) for name in OPTIONAL_INPUTS}
            frame = parse_frame_request(
                sequence_id, start, end, tensors, image, self.samurai_defaults
            )
        except InputError as exc:
            self.handler.refused(sequence_id, start, end, exc)
            raise
        tensors = self.handler.respond(frame)
        if frame.image is not None or frame.prompted_ids:
            self.frames += 1
        return tensors

    def execute(self, requests):
        responses = respond_each(requests, self._handle, "track_video", self.metrics)
        self._publish()
        return responses

    def _publish(self) -> None:
        """The metrics after a batch (evictions by the evictor thread show with the next)."""
        self.metrics.set("sam2_video_sequences", len(self.store))
        self.metrics.set("sam2_video_objects", self.store.num_objects)
        self.metrics.set("sam2_video_state_bytes", self.store.nbytes)
        self.metrics.sync_counter("sam2_video_frames_total", self.frames)
        self.metrics.sync_counter("sam2_video_evictions_total", self.store.evictions)

    def finalize(self):
        self.evictor.stop()
