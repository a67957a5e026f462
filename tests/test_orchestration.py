"""benchmarks/orchestration.py: the instant stand-in networks keep the protocol's contract, and a
tiny run records every field with transfers per frame that do not grow with the objects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sam2_triton.benchmarks import orchestration
from sam2_triton.export.contract import CONTRACTS
from sam2_triton.python_backend.video.heads import SAM2_PRESENCE_THRESHOLD

CASE_FIELDS = {
    "device",
    "mode",
    "objects",
    "answer",
    "host_ms_per_frame",
    "transfers_per_frame",
}
SIZES = {
    "batch": 3,
    "num_images": 3,
    "num_prompts": 3,
    "num_points": 1,
    "mask_height": 256,
    "mask_width": 256,
    "num_memories": 2,
    "num_pointers": 2,
}


def contract_inputs(network: str) -> dict[str, torch.Tensor]:
    return {
        spec.name: torch.zeros(spec.concrete_shape(SIZES), dtype=getattr(torch, spec.dtype))
        for spec in CONTRACTS[network].inputs
    }


def test_instant_networks_answer_in_the_contract_shapes():
    networks = orchestration.InstantNetworks("cpu", max_objects=4)
    calls = {
        "image_encoder": lambda: networks.encode(torch.zeros(1, 3, 1024, 1024)),
        "mask_decoder": lambda: networks.decode(contract_inputs("mask_decoder")),
        "memory_encoder": lambda: networks.encode_memory(contract_inputs("memory_encoder")),
        "memory_attention": lambda: networks.attend(contract_inputs("memory_attention")),
    }
    for network, call in calls.items():
        outputs = call()
        sizes = {**SIZES, "batch": 1} if network == "image_encoder" else SIZES
        assert set(outputs) == set(CONTRACTS[network].output_names), network
        for spec in CONTRACTS[network].outputs:
            assert tuple(outputs[spec.name].shape) == spec.concrete_shape(sizes), spec.name
            assert outputs[spec.name].dtype == torch.float32
            assert outputs[spec.name].device == torch.device("cpu")
    assert networks.calls == {"encode": 1, "decode": 1, "encode_memory": 1, "attend": 1}
    decoded = networks.decode(contract_inputs("mask_decoder"))
    # every object present, one blob per object and token, each object somewhere else
    assert bool((decoded["object_score_logits"] > SAM2_PRESENCE_THRESHOLD).all())
    foreground = decoded["masks"] > 0
    assert bool(foreground.flatten(2).any(-1).all())
    assert not torch.equal(foreground[0, 1], foreground[1, 1])
    with pytest.raises(ValueError, match="batch of 5"):
        networks.attend({"current_features": torch.zeros(5, 256, 64, 64)})


def test_synthetic_clip_is_deterministic_and_clicks_land_on_the_discs():
    first = orchestration.synthetic_clip(3, 160, 90, 4, seed=1)
    again = orchestration.synthetic_clip(3, 160, 90, 4, seed=1)
    other = orchestration.synthetic_clip(3, 160, 90, 4, seed=2)
    assert len(first.frames) == 3 and first.frames[0].shape == (90, 160, 3)
    assert first.frames[0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(first.frames, again.frames))
    assert not np.array_equal(first.frames[2], other.frames[2])  # other directions
    assert not np.array_equal(first.frames[0], first.frames[2])  # the discs move
    for t in range(3):
        for k, (x, y) in enumerate(first.centres[t]):
            colour = orchestration.DISC_COLOURS[k]
            assert np.array_equal(first.frames[t][int(round(y)), int(round(x))], colour)
    assert list(first.clicks(0)) == [1, 2, 3, 4]


def test_a_tiny_run_records_every_field(tmp_path):
    """1 and 4 objects, 2 measured frames: every case has exactly the record's fields, and a
    frame costs as many device-to-host transfers for 4 objects as for 1."""
    json_path = tmp_path / "orchestration.json"
    orchestration.main(
        ["--objects", "1", "4", "--frames", "2", "--warmup", "2", "--size", "320x180"]
        + ["--json", str(json_path)]
    )
    record = json.loads(json_path.read_text())
    assert record["model"] == "tiny" and record["machine"] and record["date"]
    assert record["size"] == "320x180" and record["frames"] == 2
    assert record["preprocessing"] in ("device", "image")
    cases = record["cases"]
    assert len(cases) == 2 * 2 * 2 == len(record["frame_ms"])
    for case, times in zip(cases, record["frame_ms"]):
        assert set(case) == CASE_FIELDS
        assert case["device"] == "cpu"
        assert case["mode"] in orchestration.MODES and case["answer"] in orchestration.ANSWERS
        assert case["host_ms_per_frame"] > 0 and len(times) == 2
        assert case["transfers_per_frame"] >= 1
    transfers = {(c["mode"], c["answer"], c["objects"]): c["transfers_per_frame"] for c in cases}
    for mode in orchestration.MODES:
        for answer in orchestration.ANSWERS:
            assert transfers[(mode, answer, 1)] == transfers[(mode, answer, 4)], (mode, answer)
    # full answers move the full-size masks too: never fewer transfers than compact ones
    for mode in orchestration.MODES:
        assert transfers[(mode, "full", 1)] >= transfers[(mode, "compact", 1)]
    assert (tmp_path / "orchestration.png").is_file()
