"""The client command against the real server: files written, server errors as one line."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from sam2_triton import rle as client_rle
from sam2_triton.benchmarks.perf_analyzer import synthetic_image
from sam2_triton.client import Sam2Client
from sam2_triton.client.cli import main as client_main


def sample(tmp_path, width=320, height=240):
    path = tmp_path / "sample.png"
    path.write_bytes(synthetic_image(width, height))
    return path


def test_cli_segment_writes_overlay_masks_and_rle(served, tmp_path, capsys):
    image = sample(tmp_path)
    out = tmp_path / "out"
    code = client_main(
        [
            "segment",
            str(image),
            "--point",
            "160,120",
            "--box",
            "100,70,220,170",
            "--protocol",
            "grpc",
            "--url",
            served.grpc_url,
            "--output",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    overlay = Image.open(out / "overlay.png")
    assert overlay.size == (320, 240)
    records = json.loads((out / "masks.json").read_text())
    assert len(records) == 1
    mask = client_rle.decode(records[0]["segmentation"])
    png = np.asarray(Image.open(out / records[0]["file"])) > 0
    np.testing.assert_array_equal(mask, png)
    # The files hold what the library returns for the same request.
    result = Sam2Client(served.http_url).segment(
        image, point_coords=[[160, 120]], point_labels=[1], box=[100, 70, 220, 170]
    )
    np.testing.assert_array_equal(mask, result.masks[int(np.argmax(result.scores))])
    assert abs(records[0]["score"] - float(result.scores.max())) < 1e-6


def test_cli_reports_server_error_as_one_line(served, tmp_path, capsys):
    image = sample(tmp_path)
    code = client_main(
        [
            "segment",
            str(image),
            "--point",
            "5000,120",
            "--url",
            served.http_url,
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("sam2-triton-client: error: ")
    assert "far outside the 320x240 image" in err


def test_cli_health(served, capsys):
    assert client_main(["health", "--url", served.http_url]) == 0
    assert "ready" in capsys.readouterr().out
