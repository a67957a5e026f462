"""Python client for the served SAM 2 models, over tritonclient (HTTP and gRPC).

>>> from sam2_triton.client import Sam2Client
>>> client = Sam2Client("localhost:8000")  # or Sam2Client("localhost:8001", protocol="grpc")
>>> masks = client.segment("cat.jpg", point_coords=[[500, 375]], point_labels=[1]).masks
"""

from sam2_triton.client.client import InteractiveSession, Sam2Client
from sam2_triton.client.errors import Sam2ClientError
from sam2_triton.client.results import GeneratedMask, ImageEmbeddings, Segmentation

__all__ = [
    "GeneratedMask",
    "ImageEmbeddings",
    "InteractiveSession",
    "Sam2Client",
    "Sam2ClientError",
    "Segmentation",
]
