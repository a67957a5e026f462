"""TensorRT engines: built, then compared with ONNX Runtime. Needs TensorRT and an NVIDIA GPU;
without them these tests are skipped with the reason, and the commands must say so clearly."""

from __future__ import annotations

import pytest

from sam2_triton.cli import main
from sam2_triton.configs import get_profile
from sam2_triton.export.tensorrt.runtime import tensorrt_unavailable_reason

UNAVAILABLE = tensorrt_unavailable_reason()
needs_tensorrt = pytest.mark.skipif(
    bool(UNAVAILABLE), reason=f"TensorRT tests need TensorRT and a GPU: {UNAVAILABLE}"
)


@needs_tensorrt
@pytest.mark.tensorrt
@pytest.mark.parametrize("profile", ["gpu-fp32", "gpu-fp16"])
def test_engines_match_onnxruntime(exported, tmp_path, profile):
    from sam2_triton.export.tensorrt.builder import build_engines, plan_metadata_path
    from sam2_triton.export.tensorrt.verify import format_report, verify_engines

    profile = get_profile(profile)
    plans = build_engines(exported.directory, tmp_path, profile, workspace_gib=4)
    assert all(p.is_file() and p.stat().st_size > 0 for p in plans)
    assert plan_metadata_path(tmp_path, "image_encoder").is_file()
    report = verify_engines(exported.directory, tmp_path, profile)
    assert all(e.ok for e in report), format_report(report)


@pytest.mark.skipif(not UNAVAILABLE, reason="TensorRT and a GPU are present")
def test_commands_explain_missing_tensorrt(exported, capsys):
    for command in ("build-engines", "verify-engines"):
        status = main([command, "--model-dir", str(exported.directory), "--profile", "gpu-fp16"])
        assert status == 2
        err = capsys.readouterr().err
        assert err.startswith("sam2-triton: error: ")
        assert "TensorRT" in err or "GPU" in err


def test_tensorrt_needs_a_tensorrt_profile(exported, capsys):
    status = main(["build-engines", "--model-dir", str(exported.directory), "--profile", "cpu"])
    assert status == 2
    assert "runs onnxruntime, not TensorRT" in capsys.readouterr().err
