"""The video client against the real server (`served` fixture): the library over HTTP (full-size
masks) and the `track` command over gRPC (masks as the server's RLE) give the same masks; the
command writes overlay.mp4 and masks.json.

Each tracked frame costs several seconds on CPU, so the video has 3 frames.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sam2_triton import rle
from sam2_triton.client import FramePrompts, Sam2Client
from sam2_triton.client.cli import main as client_main
from sam2_triton.client.video_io import VideoWriter, open_frames

NUM_FRAMES = 3
WIDTH, HEIGHT = 160, 120
BOX = (24, 34, 72, 82)  # around the disc on frame 0 (x0, y0, x1, y1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 3-frame H.264 video: a disc moving right over a textured background."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack(
        [60 + 30 * np.sin(xx / 9.0), 70 + 30 * np.cos(yy / 11.0), np.full(xx.shape, 90.0)], axis=-1
    )
    with VideoWriter(path, fps=5) as writer:
        for t in range(NUM_FRAMES):
            frame = background.copy()
            frame[(xx - 48 - 8 * t) ** 2 + (yy - 58) ** 2 <= 20**2] = (230, 60, 40)
            writer.write(frame.astype(np.uint8))
    return path


def test_library_over_http_and_command_over_grpc_track_the_same_masks(
    served, clip, tmp_path, capsys
):
    frames = list(open_frames(clip).frames())  # what the command decodes too
    with Sam2Client(served.http_url).video_session(num_frames=NUM_FRAMES) as video:
        results = list(video.track_frames(frames, {0: FramePrompts(boxes={1: BOX})}))
        corrected = video.correct(points={1: ([[48 + 16, 58]], [1])})
    assert [r.frame_index for r in results] == [0, 1, 2]
    for result in results:
        assert result.obj_ids.tolist() == [1]
        assert result.masks.shape == (1, HEIGHT, WIDTH) and result.masks.dtype == bool
        assert result.present.tolist() == [True] and result.masks.any()
        assert result.state_bytes > 0
    assert corrected.frame_index == 2 and corrected.masks.shape == (1, HEIGHT, WIDTH)

    out = tmp_path / "out"
    code = client_main(
        [
            "track",
            str(clip),
            "--box",
            "0:1:" + ",".join(map(str, BOX)),
            "--num-frames-known",
            "--answer",
            "rle",
            "--mask-format",
            "rle",
            "--frame-encoding",
            "png",
            "--protocol",
            "grpc",
            "--url",
            served.grpc_url,
            "--output",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    records = json.loads((out / "masks.json").read_text())
    assert [(r["frame"], r["obj_id"]) for r in records] == [(0, 1), (1, 1), (2, 1)]
    for record, result in zip(records, results):
        np.testing.assert_array_equal(rle.decode(record["segmentation"]), result.masks[0])
        assert record["score"] == pytest.approx(float(result.scores[0]), abs=1e-6)
        assert record["present"] is True
        np.testing.assert_allclose(record["mask_box"], result.boxes[0], atol=1e-4)
    overlay = open_frames(out / "overlay.mp4")
    assert overlay.num_frames == NUM_FRAMES and overlay.size == (WIDTH, HEIGHT)


def test_command_reports_a_rejected_prompt_as_one_line(served, clip, tmp_path, capsys):
    code = client_main(
        [
            "track",
            str(clip),
            "--box",
            "0:1:10,10,4000,50",
            "--url",
            served.http_url,
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("sam2-triton-client: error: track_video: BOXES of object 1")
    assert "far outside the 160x120 image" in err
