"""The `sam2-triton` command: export from a checkpoint file, clear one-line errors."""

from __future__ import annotations

import json

from sam2_triton.cli import main
from sam2_triton.export.contract import CONTRACTS


def test_export_from_checkpoint_then_lint(test_checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny"
    assert (
        main(
            [
                "export",
                "--model",
                "tiny",
                "--checkpoint",
                str(test_checkpoint("tiny")),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    for contract in CONTRACTS.values():
        assert (out / contract.file).stat().st_size > 1000
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["model"]["checkpoint"]["official"] is False  # test weights, not Meta's file
    assert "not the official" in capsys.readouterr().err
    assert main(["lint", str(out)]) == 0
    assert capsys.readouterr().out.count(": ok") == 4


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sam2-triton: error: ") and "\n" not in err  # one line, no traceback
    return err


def test_unknown_size(capsys):
    assert "unknown model size 'tiny2'" in _error(capsys, ["export", "--model", "tiny2"])


def test_missing_checkpoint_explains_what_to_do(tmp_path, capsys):
    err = _error(capsys, ["export", "--model", "small", "--checkpoint-dir", str(tmp_path)])
    assert f"{tmp_path}/sam2.1_hiera_small.pt not found" in err
    assert "sam2-triton download --model small" in err and "--random-weights" in err


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    err = _error(
        capsys,
        ["export", "--model", "tiny", "--checkpoint", str(bad), "--output", str(tmp_path / "o")],
    )
    assert "not a readable PyTorch checkpoint" in err


def test_mismatched_checkpoint(test_checkpoint, tmp_path, capsys):
    err = _error(
        capsys,
        [
            "export",
            "--model",
            "large",
            "--checkpoint",
            str(test_checkpoint("tiny")),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert "does not match config configs/sam2.1/sam2.1_hiera_l.yaml" in err


def test_build_repository_without_export_says_so(tmp_path, capsys):
    err = _error(
        capsys,
        [
            "build-repository",
            "--model-dir",
            str(tmp_path / "none"),
            "--output",
            str(tmp_path / "repo"),
        ],
    )
    assert "metadata.json not found" in err and "export" in err


def test_build_repository_unknown_profile(tmp_path, capsys):
    err = _error(
        capsys, ["build-repository", "--profile", "gpu-fp8", "--output", str(tmp_path / "repo")]
    )
    assert "unknown deployment profile 'gpu-fp8'" in err


def test_serve_missing_repository(tmp_path, capsys):
    err = _error(
        capsys,
        [
            "serve",
            "--repository",
            str(tmp_path / "none"),
            "--http-port",
            "18990",
            "--grpc-port",
            "18991",
            "--metrics-port",
            "18992",
        ],
    )
    assert "does not exist" in err


def test_serve_port_in_use(tmp_path, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        err = _error(
            capsys,
            [
                "serve",
                "--repository",
                str(tmp_path),
                "--http-port",
                str(port),
                "--grpc-port",
                "18991",
                "--metrics-port",
                "18992",
            ],
        )
    assert f"port {port} is already in use" in err
