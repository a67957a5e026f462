"""Frames in and out for video tracking: read a video file or a folder of images, write a video.

Video files are read and written with PyAV (FFmpeg); a folder's images with Pillow, decoded
as the server decodes them (`Image.open(...).convert("RGB")`). Frames are RGB uint8 [H, W, 3].

    source = open_frames("clip.mp4")              # or a folder: frame_000.jpg, frame_001.jpg, ...
    source.num_frames, source.fps, source.size    # 24, 25.0, (320, 240) as (width, height)
    with VideoWriter("out.mp4", source.fps) as out:
        for pixels in source.frames():
            out.write(pixels)

Problems (missing or unreadable source, an empty folder, a file FFmpeg cannot decode) raise
Sam2ClientError with a one-line message.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sam2_triton.client.errors import Sam2ClientError
from sam2_triton.client.images import ImageLike, load_rgb

if TYPE_CHECKING:
    from typing_extensions import Self

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FOLDER_FPS = 10.0  # frame rate given to a folder of images
FRAME_ENCODINGS = ("raw", "png", "jpeg")  # how frames travel: IMAGE_RAW pixels or IMAGE bytes
JPEG_QUALITY = 95
VIDEO_CRF = 18  # H.264 constant rate factor of written videos (lower: better, larger)


def _av():
    try:
        import av
    except ImportError:
        raise ImportError("PyAV is needed for video files: pip install av") from None
    return av


def _reason(error: Exception) -> str:
    """FFmpeg's words for `error`, without its errno."""
    return getattr(error, "strerror", None) or str(error)


def _natural_key(path: Path) -> list:
    """Sort key: digit runs compare as numbers ("2.jpg" before "10.jpg")."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


@dataclass(frozen=True)
class FrameSource:
    """Frames of a video file or a folder of images.

    num_frames: the frame count (a folder's images; a video's count from its container, or
    from its packets when the container does not say); fps: frames per second (a video's
    average rate, DEFAULT_FOLDER_FPS for a folder); size: (width, height) of the first frame;
    files: a folder's images in order (empty for a video file).
    """

    path: Path
    num_frames: int
    fps: float
    size: tuple[int, int]
    files: tuple[Path, ...] = ()

    @property
    def is_folder(self) -> bool:
        return bool(self.files)

    def frames(self) -> Iterator[np.ndarray]:
        """The frames in order, RGB uint8 [H, W, 3], decoded one at a time."""
        if self.is_folder:
            for file in self.files:
                yield load_rgb(file)
            return
        av = _av()
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as error:
            raise Sam2ClientError(f"cannot read video {self.path}: {_reason(error)}") from None


def _open_folder(folder: Path) -> FrameSource:
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=_natural_key,
    )
    if not files:
        raise Sam2ClientError(
            f"no frames in folder {folder}: expected images ({', '.join(IMAGE_SUFFIXES)})"
        )
    try:
        with Image.open(files[0]) as first:
            size = first.size
    except OSError as error:
        raise Sam2ClientError(f"cannot read frame {files[0]}: {error}") from None
    return FrameSource(folder, len(files), DEFAULT_FOLDER_FPS, size, tuple(files))


def _open_video(path: Path) -> FrameSource:
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise Sam2ClientError(f"{path} has no video stream")
            stream = container.streams.video[0]
            count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
            rate = stream.average_rate or stream.guessed_rate or DEFAULT_FOLDER_FPS
            size = (stream.codec_context.width, stream.codec_context.height)
    except av.FFmpegError as error:
        raise Sam2ClientError(f"cannot read video {path}: {_reason(error)}") from None
    if count == 0:
        raise Sam2ClientError(f"video {path} has no frames")
    return FrameSource(path, int(count), float(rate), size)


def open_frames(source: str | Path) -> FrameSource:
    """A video file (anything FFmpeg reads: MP4, AVI, WebM, ...) or a folder of images
    (sorted by name, digit runs as numbers)."""
    path = Path(source)
    if path.is_dir():
        return _open_folder(path)
    if not path.is_file():
        raise Sam2ClientError(f"no video file or folder of frames at {path}")
    return _open_video(path)


def encode_frame(pixels: np.ndarray, encoding: str) -> ImageLike:
    """What to send for a frame: the pixels ("raw", IMAGE_RAW) or PNG / JPEG bytes (IMAGE)."""
    if encoding == "raw":
        return pixels
    if encoding not in FRAME_ENCODINGS:
        raise ValueError(f"unknown frame encoding {encoding!r}: use one of {FRAME_ENCODINGS}")
    buffer = io.BytesIO()
    if encoding == "png":
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG", compress_level=1)
    else:
        Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class VideoWriter:
    """Writes RGB uint8 [H, W, 3] frames to a video file with PyAV (H.264 in MP4 by default).

    Frames must all have the first frame's size; odd widths or heights are padded by one
    edge pixel (H.264's 4:2:0 sampling needs even sides). `fps` may be fractional (29.97).
    """

    def __init__(self, path: str | Path, fps: float, codec: str | None = None):
        av = _av()
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        if codec is None:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.codec = codec
        self.frames_written = 0
        self._size: tuple[int, int] | None = None  # (height, width) of the frames given
        self._container = av.open(str(self.path), mode="w")
        self._stream: Any = None  # av's video stream, opened by the first frame

    def _open_stream(self, height: int, width: int) -> None:
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": str(VIDEO_CRF)}
        self._stream = stream
        self._size = (height, width)

    def write(self, pixels: np.ndarray) -> None:
        """Append one frame (RGB uint8 [H, W, 3])."""
        av = _av()
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(
                f"frames must be RGB uint8 [H, W, 3], got {pixels.dtype} {list(pixels.shape)}"
            )
        if self._stream is None:
            self._open_stream(*pixels.shape[:2])
        height, width = self._size or pixels.shape[:2]
        if pixels.shape[:2] != (height, width):
            raise ValueError(
                f"frame {self.frames_written} is {pixels.shape[1]}x{pixels.shape[0]}, the video "
                f"is {width}x{height}"
            )
        pad = ((0, pixels.shape[0] % 2), (0, pixels.shape[1] % 2), (0, 0))
        if any(p[1] for p in pad):
            pixels = np.pad(pixels, pad, mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and close the file (a video without frames is left empty)."""
        if self._container is None:
            return
        try:
            if self._stream is not None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
