"""The exported graphs, metadata.json and the fp32 layer choice follow the written contract."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from sam2_triton.configs import load_profiles
from sam2_triton.errors import ExportError
from sam2_triton.export.contract import CONTRACTS, HIDDEN_DIM
from sam2_triton.export.metadata import load_metadata
from sam2_triton.export.onnx_export import check_graph_contract
from sam2_triton.export.tensorrt.builder import layer_matches_nodes
from sam2_triton.export.tensorrt.precision import fp32_node_names
from sam2_triton.export.tensorrt.profiles import profile_shapes
from sam2_triton.python_backend.onnx_networks import InputError, OnnxNetworks, validate_inputs


@pytest.mark.parametrize("network", list(CONTRACTS))
def test_graph_io_matches_contract(exported, network):
    proto = onnx.load(str(exported.directory / CONTRACTS[network].file), load_external_data=False)
    check_graph_contract(proto, CONTRACTS[network])  # raises on any difference
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    broken.graph.input[0].name = "renamed"
    with pytest.raises(ExportError, match="breaks its I/O contract"):
        check_graph_contract(broken, CONTRACTS[network])


def test_metadata(exported):
    metadata = load_metadata(exported.directory)
    model = exported.model
    assert metadata["model"]["name"] == exported.spec.name
    assert metadata["model"]["checkpoint"]["random_weights"] is False
    assert metadata["settings"]["num_maskmem"] == model.num_maskmem
    assert metadata["settings"]["binarize_mask_from_pts_for_mem_enc"] is True
    assert metadata["decoder"]["dynamic_multimask_via_stability"] is True
    no_mem = np.array(metadata["constants"]["no_mem_embed"], np.float32)
    assert no_mem.shape == (HIDDEN_DIM,)
    np.testing.assert_array_equal(no_mem, model.no_mem_embed.detach().numpy().ravel())
    np.testing.assert_array_equal(
        np.array(metadata["constants"]["no_obj_ptr"], np.float32),
        model.no_obj_ptr.detach().numpy().ravel(),
    )
    assert len(metadata["constants"]["mask_downsample_weight"]) == 16
    assert set(metadata["graphs"]) == set(CONTRACTS)
    json.dumps(metadata)  # plain JSON throughout


def test_metadata_version_is_checked(tmp_path):
    (tmp_path / "metadata.json").write_text('{"format_version": 999}')
    with pytest.raises(ExportError, match="format_version 999"):
        load_metadata(tmp_path)
    with pytest.raises(ExportError, match="export the model first"):
        load_metadata(tmp_path / "absent")


@pytest.mark.parametrize("network", list(CONTRACTS))
def test_fp32_nodes_cover_sensitive_math(exported, network):
    proto = onnx.load(str(exported.directory / CONTRACTS[network].file), load_external_data=False)
    chosen = set(fp32_node_names(proto))
    by_type = {}
    for node in proto.graph.node:
        by_type.setdefault(node.op_type, []).append(node.name)
    for op in ("LayerNormalization", "Softmax", "ReduceMean"):
        assert set(by_type.get(op, [])) <= chosen, op
    assert not chosen & set(by_type.get("MatMul", []) + by_type.get("Conv", []))
    if network == "memory_attention":
        rotary = {n.name for n in proto.graph.node if "rotary" in n.name and n.op_type == "Mul"}
        assert rotary and rotary <= chosen
    if network in ("mask_decoder", "memory_encoder"):  # LayerNorm2d written out
        assert any(n.endswith("/Div") and n in chosen for n in by_type.get("Div", []))
    recorded = load_metadata(exported.directory)["graphs"][network]["fp32_nodes"]
    assert set(recorded) == chosen


def test_layer_names_map_to_nodes():
    nodes = {"/norm1/LayerNormalization", "/self_rotary/Mul"}
    assert layer_matches_nodes("/norm1/LayerNormalization", nodes)
    assert layer_matches_nodes("/self_rotary/Mul_2", nodes)
    assert not layer_matches_nodes("/q_proj/MatMul", nodes)
    # TensorRT 10 records the node in the layer metadata, which wins over the name
    assert layer_matches_nodes("ONNXTRT_helper_7", nodes, "[ONNX Layer: /self_rotary/Mul]")
    assert not layer_matches_nodes("/self_rotary/Mul", nodes, "[ONNX Layer: /q_proj/MatMul]")
    assert layer_matches_nodes("x", {"/f/Mul"}, "[ONNX Layer: /f/Mul | Local Function: g]")
    assert layer_matches_nodes("/a/Add_1_57", {"/a/Add_1"})  # node "/a/Add_1", layer 57


@pytest.mark.parametrize("profile", ["gpu-fp16", "gpu-fp32"])
def test_optimization_profiles_cover_every_input(profile):
    profile = load_profiles()[profile]
    for contract in CONTRACTS.values():
        shapes = profile_shapes(contract, profile)
        assert list(shapes) == contract.input_names
        for spec in contract.inputs:
            low, opt, high = shapes[spec.name]
            assert len(low) == len(spec.shape)
            assert all(a <= b <= c for a, b, c in zip(low, opt, high))
    decoder = profile_shapes(CONTRACTS["mask_decoder"], profile)
    assert decoder["point_coords"][2] == (64, 16, 2)


def test_runner_rejects_inputs_outside_the_contract(exported):
    networks = OnnxNetworks(exported.directory, networks=["memory_encoder"])
    good = {
        "image_embed": np.zeros((2, 256, 64, 64), np.float32),
        "mask_logits": np.zeros((2, 1, 256, 256), np.float32),
        "object_score_logits": np.zeros((2, 1), np.float32),
        "is_mask_from_points": np.zeros((2,), np.float32),
    }
    assert networks.run("memory_encoder", **good)["memory_features"].shape == (2, 64, 64, 64)
    contract = CONTRACTS["memory_encoder"]
    with pytest.raises(InputError, match="dtype float64"):
        validate_inputs(contract, dict(good, is_mask_from_points=np.zeros((2,))))
    with pytest.raises(InputError, match="size 128 on axis 1"):
        validate_inputs(contract, dict(good, image_embed=np.zeros((2, 128, 64, 64), np.float32)))
    with pytest.raises(InputError, match="axis 'batch' is 3 here but 2"):
        validate_inputs(contract, dict(good, object_score_logits=np.zeros((3, 1), np.float32)))
    with pytest.raises(InputError, match="missing inputs \\['mask_logits'\\]"):
        validate_inputs(contract, {k: v for k, v in good.items() if k != "mask_logits"})


def test_contract_document_matches_code():
    """export/README.md documents every tensor of every graph with the shape in contract.py."""
    from pathlib import Path

    import sam2_triton.export as export_package

    doc = (Path(export_package.__file__).parent / "README.md").read_text()
    for contract in CONTRACTS.values():
        assert f"### {contract.name}" in doc
        for direction, tensors in (("in", contract.inputs), ("out", contract.outputs)):
            for spec in tensors:
                shape = "[" + ", ".join(str(d) for d in spec.shape) + "]"
                assert f"| {direction} `{spec.name}`" in doc, spec.name
                assert f"`{shape}`" in doc, (spec.name, shape)
