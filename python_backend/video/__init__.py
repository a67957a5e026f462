"""Streaming SAM 2 video object tracking over the exported graphs (no Triton imports).

Modules, one job each:

* `memory_bank`: bounded per-object memory and SAM 2's choice of memories / object pointers for
  a frame (`MemoryBank`, `MemorySettings`, `Selection`); SAMURAI's choice plugs in;
* `frames`: frame preprocessing (the video predictor's, or the image predictor's) and the
  resize of mask prompts;
* `heads`: mask-token / pointer choice and object-presence handling of decoder outputs, mask
  prompts used as output;
* `networks`: the `VideoNetworks` protocol and its ONNX Runtime implementation;
* `tracker`: `VideoTracker` (add_prompt / track / correct / remove_object, SAM 2 or SAMURAI)
  and `FrameResult`.

SAMURAI's filter, mask choice and memory selection live in python_backend/samurai.py.
Design notes: docs/video-tracker.md, docs/memory-bank.md
"""

from sam2_triton.python_backend.video.memory_bank import MemoryBank, MemorySettings, Selection
from sam2_triton.python_backend.video.networks import OnnxVideoNetworks, VideoNetworks
from sam2_triton.python_backend.video.tracker import FrameResult, VideoTracker

__all__ = [
    "FrameResult",
    "MemoryBank",
    "MemorySettings",
    "OnnxVideoNetworks",
    "Selection",
    "VideoNetworks",
    "VideoTracker",
]
