"""`make run` on a first machine: `sam2-triton export --download-if-missing
--random-weights-if-missing` picks the official checkpoint, a download, or random weights and says
which; the demo names its overlays after that choice.

The graphs are not exported here (`export_model` is replaced by a recorder): what is checked is
which weights reach the exporter and what it is told to record in metadata.json.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import free_port

from sam2_triton.cli import main
from sam2_triton.configs import get_model
from sam2_triton.export import checkpoints as ck
from sam2_triton.export import onnx_export
from sam2_triton.export.metadata import FORMAT_VERSION, METADATA_FILE
from sam2_triton.serving import demo

FIRST_RUN = ["export", "--model", "tiny", "--download-if-missing", "--random-weights-if-missing"]


@pytest.fixture
def recorded_export(monkeypatch):
    """Replace the ONNX export by a recorder of the model and weights description it gets."""
    calls = []

    def record(model, spec, output_dir, *, checkpoint):
        calls.append({"model": model, "spec": spec, "checkpoint": checkpoint})
        return Path(output_dir) / METADATA_FILE

    monkeypatch.setattr(onnx_export, "export_model", record)
    return calls


def _unreachable_url() -> str:
    return f"http://127.0.0.1:{free_port()}/sam2.1_hiera_tiny.pt"


def test_first_run_offline_exports_random_weights_and_says_so(recorded_export, tmp_path, capsys):
    argv = FIRST_RUN + ["--checkpoint-dir", str(tmp_path / "checkpoints")]
    argv += ["--download-url", _unreachable_url(), "--output", str(tmp_path / "tiny")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("weights: ")]
    assert line.startswith("weights: RANDOM (download failed: ") and "meaningless" in line
    [call] = recorded_export
    assert call["checkpoint"]["random_weights"] is True
    assert call["checkpoint"]["reason"].startswith("download failed: ")
    assert not (tmp_path / "checkpoints" / "sam2.1_hiera_tiny.pt").exists()


def test_first_run_uses_present_official_checkpoint(
    recorded_export, monkeypatch, test_checkpoint, tmp_path, capsys
):
    source = test_checkpoint("tiny")
    spec = dataclasses.replace(
        get_model("tiny"), sha256=ck.sha256_file(source), size=source.stat().st_size
    )
    monkeypatch.setattr("sam2_triton.configs.get_model", lambda name: spec)
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    present = Path(shutil.copyfile(source, directory / spec.checkpoint))
    argv = FIRST_RUN + ["--checkpoint-dir", str(directory), "--output", str(tmp_path / "tiny")]
    argv += ["--download-url", _unreachable_url()]  # must not be needed
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"weights: official checkpoint {present} (sha256 verified)" in out.splitlines()
    [call] = recorded_export
    assert call["checkpoint"] == {
        "file": spec.checkpoint,
        "sha256": spec.sha256,
        "official": True,
        "random_weights": False,
    }
    saved = torch.load(source, map_location="cpu", weights_only=True)["model"]
    for key, value in call["model"].state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_first_run_refuses_present_file_with_wrong_checksum(recorded_export, tmp_path, capsys):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    present = directory / "sam2.1_hiera_tiny.pt"
    present.write_bytes(b"not the official file")
    argv = FIRST_RUN + ["--checkpoint-dir", str(directory), "--output", str(tmp_path / "tiny")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sam2-triton: error: refusing {present}") and "\n" not in err
    assert recorded_export == []  # neither random weights nor anything else was exported
    assert present.read_bytes() == b"not the official file"


def test_download_does_not_apply_to_an_explicit_checkpoint(tmp_path, capsys):
    argv = FIRST_RUN + ["--checkpoint", str(tmp_path / "mine.pt")]
    assert main(argv) == 2
    assert "does not apply to an explicit checkpoint file" in capsys.readouterr().err


# -- the demo's overlay names -------------------------------------------------------------------


def test_overlay_names_say_random_weights():
    assert demo.overlay_name("overlay.png", random_weights=False) == "overlay.png"
    assert demo.overlay_name("overlay.png", random_weights=True) == "overlay_random_weights.png"
    assert demo.overlay_name("overlay.mp4", random_weights=True) == "overlay_random_weights.mp4"


@pytest.mark.parametrize("random_weights", [True, False])
def test_demo_reads_weights_from_metadata_and_renames(tmp_path, random_weights):
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    metadata = {
        "format_version": FORMAT_VERSION,
        "model": {"checkpoint": {"random_weights": random_weights}},
    }
    (export_dir / METADATA_FILE).write_text(json.dumps(metadata))
    assert demo.export_has_random_weights(export_dir) is random_weights

    folder = tmp_path / "demo"
    folder.mkdir()
    stale = folder / demo.overlay_name("overlay.png", not random_weights)
    stale.write_bytes(b"from an earlier run with the other weights")
    (folder / "overlay.png").write_bytes(b"new")
    named = demo.name_overlay(folder, "overlay.png", random_weights)
    assert named.name == ("overlay_random_weights.png" if random_weights else "overlay.png")
    assert [p.name for p in folder.iterdir()] == [named.name]
    assert named.read_bytes() == b"new"
