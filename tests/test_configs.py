"""configs/: the eight model sizes and the deployment profiles."""

from pathlib import Path

import pytest
import sam2

from sam2_triton import configs
from sam2_triton.errors import ConfigError
from sam2_triton.export.contract import CONTRACTS


def test_eight_official_sizes():
    models = configs.load_models()
    assert sorted(m.family for m in models.values()) == ["sam2.0"] * 4 + ["sam2.1"] * 4
    for spec in models.values():
        assert (Path(sam2.__path__[0]) / spec.config).is_file(), spec.config
        assert spec.url.endswith("/" + spec.checkpoint)
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.size > 100_000_000


@pytest.mark.parametrize(
    "alias,name",
    [
        ("tiny", "tiny"),
        ("T", "tiny"),
        ("sam2.1_hiera_large", "large"),
        ("b+", "base_plus"),
        ("sam2_hiera_small", "sam2_small"),
    ],
)
def test_aliases(alias, name):
    assert configs.get_model(alias).name == name


def test_unknown_size_names_the_choices():
    with pytest.raises(ConfigError, match="unknown model size 'huge'.*tiny, small"):
        configs.get_model("huge")


def test_unknown_profile_names_the_choices():
    with pytest.raises(ConfigError, match="unknown deployment profile 'gpu-int8'.*cpu"):
        configs.get_profile("gpu-int8")


def test_every_dynamic_axis_has_engine_shapes():
    for profile in configs.load_profiles().values():
        for contract in CONTRACTS.values():
            for axis in contract.axis_names:
                low, opt, high = profile.axis_range(contract.name, axis)
                assert 0 < low <= opt <= high


def test_malformed_profiles_are_rejected(tmp_path):
    bad = tmp_path / "profiles.yaml"
    bad.write_text("engine_shapes:\n  image_encoder:\n    batch: [4, 1, 2]\nprofiles: {}\n")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        configs.load_profiles(bad)
    bad.write_text("profiles:\n  x: {runtime: tensorrt, device: cpu, precision: fp16}\n")
    with pytest.raises(ConfigError, match="TensorRT runs on gpu only"):
        configs.load_profiles(bad)


def test_dataclass_settings_round_trip_through_model_parameters():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Settings:
        count: "int"  # a string, as under `from __future__ import annotations`
        ratio: float
        mode: str

    assert configs.field_types(Settings) == {"count": int, "ratio": float, "mode": str}
    settings = Settings(3, 0.25, "video")
    parameters = configs.dataclass_parameters(settings)
    assert parameters == {"count": "3", "ratio": "0.25", "mode": "video"}
    assert configs.dataclass_from_parameters(Settings, parameters) == settings
    with pytest.raises(KeyError, match="ratio"):
        configs.dataclass_from_parameters(Settings, {"count": "3", "mode": "video"})
    limits = configs.RequestLimits.for_profile(configs.get_profile("cpu"))
    parameters = configs.dataclass_parameters(limits)
    assert configs.RequestLimits.from_parameters(parameters) == limits
    del parameters["max_points"]
    with pytest.raises(ConfigError, match="model config lacks parameter 'max_points'"):
        configs.RequestLimits.from_parameters(parameters)


def test_dataclass_parameters_refuse_types_without_a_parameter_form():
    import dataclasses

    @dataclasses.dataclass
    class Flags:
        enabled: bool

    with pytest.raises(TypeError, match="Flags.enabled"):
        configs.dataclass_from_parameters(Flags, {"enabled": "False"})
