"""tools/wheelhouse.py: the platform tags it asks pip for and what it keeps of a resolution
(no network: the resolution is written here as pip's report would hold it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "wheelhouse.py"


@pytest.fixture(scope="module")
def wheelhouse():
    spec = importlib.util.spec_from_file_location("wheelhouse", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wheelhouse"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["wheelhouse"]


def entry(name: str, *requires: str) -> dict:
    return {
        "metadata": {"name": name, "version": "1.0", "requires_dist": list(requires)},
        "download_info": {"url": f"https://example.invalid/{name}-1.0-py3-none-any.whl"},
    }


def test_manylinux_tags_reach_down_to_the_oldest(wheelhouse):
    tags = wheelhouse.manylinux_platforms("2.28")
    assert tags[0] == "manylinux_2_28_x86_64" and tags[-1] == "manylinux1_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags
    with pytest.raises(ValueError, match="2.5 or newer"):
        wheelhouse.manylinux_platforms("1.9")
    options = wheelhouse.Target("3.12", "2.17").pip_options()
    assert options[:3] == ["--python-version", "3.12", "--only-binary=:all:"]
    assert options.count("--platform") == len(wheelhouse.manylinux_platforms("2.17"))
    assert wheelhouse.Target(None).pip_options() == []


def test_needed_leaves_out_what_only_the_provided_need(wheelhouse):
    """torch and what only torch requires are the target's; a dependency shared with the
    project stays; extras asked for are followed, other extras and foreign markers are not."""
    resolution = [
        entry("torch", "nvidia-cudnn", "typing-extensions", "sympy"),
        entry("nvidia-cudnn"),
        entry("sympy", "mpmath"),
        entry("mpmath"),
        entry("typing_extensions"),
        entry("onnx", "typing-extensions>=4", "protobuf"),
        entry("protobuf"),
        entry(
            "tritonclient",
            "urllib3",
            'grpcio; extra == "all"',
            'aiohttp; extra == "http"',
            'pywin32; sys_platform == "win32"',
        ),
        entry("urllib3"),
        entry("grpcio"),
        entry("aiohttp"),
        entry("pywin32"),
    ]
    target = wheelhouse.Target("3.12", "2.28")
    roots = ["torch>=2.5", "onnx>=1.16", "tritonclient[all]==2.51"]
    kept = {e["metadata"]["name"] for e in wheelhouse.needed(resolution, roots, ["torch"], target)}
    assert kept == {"onnx", "typing_extensions", "protobuf", "tritonclient", "urllib3", "grpcio"}
    everything = {e["metadata"]["name"] for e in wheelhouse.needed(resolution, roots, [], target)}
    assert {"torch", "nvidia-cudnn", "sympy", "mpmath"} <= everything
    assert "aiohttp" not in everything and "pywin32" not in everything


def test_requirement_names_are_canonical(wheelhouse):
    assert wheelhouse.requirement_name("tritonclient[all]==2.51.0") == "tritonclient"
    assert wheelhouse.requirement_name("PyYAML>=6; python_version > '3'") == "pyyaml"
    assert wheelhouse.canonical("typing_extensions") == "typing-extensions"
    assert wheelhouse.requirement_name("zope.interface") == "zope-interface"
