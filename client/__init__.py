"""Python client for the served SAM 2 models, over tritonclient (HTTP and gRPC).

>>> from sam2_triton.client import Sam2Client
>>> client = Sam2Client("localhost:8000")  # or Sam2Client("localhost:8001", protocol="grpc")
>>> masks = client.segment("cat.jpg", point_coords=[[500, 375]], point_labels=[1]).masks
>>> with client.video_session() as video:
...     masks = video.track("frame0.jpg", boxes={1: [40, 30, 120, 110]}).masks
"""

from sam2_triton.client.client import InteractiveSession, Sam2Client
from sam2_triton.client.errors import Sam2ClientError
from sam2_triton.client.results import (
    GeneratedMask,
    ImageEmbeddings,
    Segmentation,
    VideoFrameResult,
)
from sam2_triton.client.video import FramePrompts, VideoSession

__all__ = [
    "FramePrompts",
    "GeneratedMask",
    "ImageEmbeddings",
    "InteractiveSession",
    "Sam2Client",
    "Sam2ClientError",
    "Segmentation",
    "VideoFrameResult",
    "VideoSession",
]
