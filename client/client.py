"""`Sam2Client`: the served SAM 2 image models, named after `SAM2ImagePredictor`'s methods.

>>> client = Sam2Client("localhost:8000")                      # or ("localhost:8001", "grpc")
>>> result = client.segment("cat.jpg", point_coords=[[500, 375]], point_labels=[1])
>>> result.masks.shape, result.scores.shape                     # ((3, H, W), (3,))
>>> with client.session("cat.jpg") as session:                 # image encoded once
...     first = session.predict(point_coords=[[500, 375]], point_labels=[1])
...     second = session.predict(point_coords=[[500, 375], [1125, 625]], point_labels=[1, 0],
...                              mask_input=first.low_res_masks[first.best_index()][None])
>>> with client.video_session() as video:                      # a video, frame by frame
...     first = video.track("frame0.jpg", boxes={1: [40, 30, 120, 110]})
...     second = video.track("frame1.jpg")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from sam2_triton import wire
from sam2_triton.client.errors import Sam2ClientError
from sam2_triton.client.images import ImageLike, image_tensor
from sam2_triton.client.prompts import normalize_prompts
from sam2_triton.client.results import GeneratedMask, ImageEmbeddings, Segmentation, generated_masks
from sam2_triton.client.transport import DEFAULT_TIMEOUT_S, Transport
from sam2_triton.client.video import (
    SequenceTransport,
    VideoSession,
    new_sequence_id,
    setting_tensors,
)


def settings_tensors(settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Automatic mask generator settings (keywords of `SAM2AutomaticMaskGenerator`) -> [1] tensors.

    Settings set to None are left out (server default). Unknown names raise TypeError.
    """
    return setting_tensors(settings, wire.GENERATOR_SETTINGS, "mask generator")


class Sam2Client:
    """Client of the served SAM 2 image models at `url` ("host:port") over HTTP or gRPC.

    `model_prefix` is put in front of every model name; `timeout_s` bounds each call (seconds).
    Failures raise `Sam2ClientError` (one-line message, `.status` as the transport reports it).
    One client per thread.
    """

    def __init__(
        self,
        url: str,
        protocol: str = "http",
        model_prefix: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        self._transport = Transport(url, protocol, timeout_s)
        self.url = url
        self.protocol = protocol
        self.model_prefix = model_prefix

    def model_name(self, model: str) -> str:
        """The served name of `model` (one of the model names in `sam2_triton.wire`)."""
        return f"{self.model_prefix}{model}"

    def _infer(
        self, model: str, tensors: Mapping[str, np.ndarray], outputs: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        return self._transport.infer(self.model_name(model), tensors, outputs)

    def segment(
        self,
        image: ImageLike,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
    ) -> Segmentation:
        """Encode `image` and decode the prompts in one call (the `segment` ensemble).

        Prompts as `SAM2ImagePredictor.predict` (pixels, (x, y)); one prompt in gives
        [K, H, W] masks, N prompts in give [N, K, H, W].
        """
        prompts = normalize_prompts(point_coords, point_labels, box, mask_input)
        tensors = {**image_tensor(image), **prompts.tensors(multimask_output)}
        outputs = self._infer(wire.SEGMENT, tensors, wire.MASK_OUTPUTS)
        return Segmentation.from_outputs(outputs, prompts.batched)

    def session(self, image: ImageLike) -> InteractiveSession:
        """Encode `image` once on the server (`segment_interactive`); prompt it with `predict`.

        Close the session (or use it as a context manager) to free the server's cache entry.
        """
        outputs = self._infer(
            wire.SEGMENT_INTERACTIVE,
            image_tensor(image),
            (wire.IMAGE_ID, wire.ORIGINAL_SIZE),
        )
        image_id = bytes(np.asarray(outputs[wire.IMAGE_ID]).reshape(-1)[0])
        height, width = (int(v) for v in np.asarray(outputs[wire.ORIGINAL_SIZE]).reshape(-1))
        return InteractiveSession(self, image_id, (height, width))

    def encode(self, image: ImageLike) -> ImageEmbeddings:
        """Image embeddings of `image` (`encode_image`), to decode prompts with `decode`."""
        outputs = self._infer(wire.ENCODE_IMAGE, image_tensor(image), wire.EMBEDDING_TENSORS)
        return ImageEmbeddings.from_outputs(outputs)

    def decode(
        self,
        embeddings: ImageEmbeddings,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
    ) -> Segmentation:
        """Masks for prompts on an encoded image (`decode_masks`); prompts as in `segment`."""
        prompts = normalize_prompts(point_coords, point_labels, box, mask_input)
        tensors = {**embeddings.tensors(), **prompts.tensors(multimask_output)}
        outputs = self._infer(wire.DECODE_MASKS, tensors, wire.MASK_OUTPUTS)
        return Segmentation.from_outputs(outputs, prompts.batched)

    def generate_masks(self, image: ImageLike, **settings: Any) -> list[GeneratedMask]:
        """Masks of everything in `image` (`automatic_mask_generator`).

        `settings`: points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
        stability_score_offset, box_nms_thresh, crop_n_layers, crop_nms_thresh,
        crop_overlap_ratio, crop_n_points_downscale_factor (as `SAM2AutomaticMaskGenerator`).
        """
        tensors = {**image_tensor(image), **settings_tensors(settings)}
        outputs = self._infer(wire.AUTOMATIC_MASK_GENERATOR, tensors, wire.GENERATOR_OUTPUTS)
        return generated_masks(outputs)

    def video_session(
        self,
        num_frames: int | None = None,
        samurai: bool = False,
        samurai_settings: Mapping[str, Any] | None = None,
        sequence_id: int | None = None,
        answer: str = wire.ANSWER_MASKS,
        answer_size: Sequence[int] | None = None,
        snapshot_every: int | None = None,
        fallback_urls: Sequence[str] = (),
        restore_from: bytes | None = None,
    ) -> VideoSession:
        """A video to track with `track_video`: `track` / `track_frames` / `correct` / `end`.

        `num_frames`: the video's length when known; `samurai`: SAMURAI motion-aware tracking,
        `samurai_settings` overriding its configs/samurai.yaml values for this video;
        `sequence_id`: Triton's correlation id (default: random, 63 bits); `answer`: what each
        frame's result holds, for the whole session: "masks" (bool at the frame's size, the
        default), "rle" (COCO RLE of those masks, encoded by the server: far fewer bytes),
        "small_masks" (bool) or "logits" (float32, before thresholding) at `answer_size`
        (h, w); 256x256 logits are the decoder's own. The session has its own connection (over
        gRPC its own stream); nothing is sent before the first frame. See
        `sam2_triton.client.video`.

        Failover: `restore_from` starts the video from `VideoSession.snapshot()` bytes (its
        options come with it: pass none of num_frames / samurai / answer); `snapshot_every` K
        takes a snapshot every K frames and, when the server is lost, resumes the video on the
        next of `fallback_urls` ("host:port", same protocol) from it (`VideoSession`).
        """
        transport = SequenceTransport(
            self.url,
            self.protocol,
            self.model_name(wire.TRACK_VIDEO),
            new_sequence_id() if sequence_id is None else sequence_id,
            self._transport.timeout_s,
        )
        try:
            return VideoSession(
                transport,
                num_frames,
                samurai,
                samurai_settings,
                answer,
                answer_size,
                snapshot_every=snapshot_every,
                fallback_urls=fallback_urls,
                restore_from=restore_from,
            )
        except BaseException:
            transport.close()
            raise

    def is_ready(self) -> bool:
        """Whether the server is ready; Sam2ClientError if it cannot be reached."""
        return self._transport.is_server_ready()

    def models_ready(self) -> dict[str, bool]:
        """Readiness of each client-facing model, keyed by served name."""
        names = [self.model_name(model) for model in wire.CLIENT_MODELS]
        return {name: self._transport.is_model_ready(name) for name in names}

    def close(self) -> None:
        """Close the connections to the server."""
        self._transport.close()

    def __enter__(self) -> Sam2Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class InteractiveSession:
    """An image encoded once on the server, answered click by click with the decoder only.

    `image_id`: the server's id for the cached embeddings; `original_size`: (h, w) pixels.
    """

    def __init__(self, client: Sam2Client, image_id: bytes, original_size: tuple[int, int]):
        self._client = client
        self._image_id = image_id
        self.original_size = original_size
        self.closed = False

    @property
    def image_id(self) -> str:
        return self._image_id.decode("utf-8", errors="replace")

    def _id_tensor(self) -> dict[str, np.ndarray]:
        return {wire.IMAGE_ID: np.array([self._image_id], dtype=np.object_)}

    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
    ) -> Segmentation:
        """Masks for prompts on the session's image; prompts and shapes as `Sam2Client.segment`."""
        if self.closed:
            raise Sam2ClientError(f"session {self.image_id} is closed")
        prompts = normalize_prompts(point_coords, point_labels, box, mask_input)
        tensors = {**self._id_tensor(), **prompts.tensors(multimask_output)}
        outputs = self._client._infer(wire.SEGMENT_INTERACTIVE, tensors, wire.MASK_OUTPUTS)
        return Segmentation.from_outputs(outputs, prompts.batched)

    def close(self) -> None:
        """Drop the server's cached embeddings (RELEASE); later calls do nothing."""
        if self.closed:
            return
        self.closed = True
        tensors = {**self._id_tensor(), wire.RELEASE: np.array([True], dtype=np.bool_)}
        self._client._infer(wire.SEGMENT_INTERACTIVE, tensors, (wire.IMAGE_ID,))

    def __enter__(self) -> InteractiveSession:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self.close()
        except Sam2ClientError:
            if exc_type is None:  # do not hide the error that ended the block
                raise
