"""TensorRT compatibility lint: exported graphs are clean; known-bad graphs are caught."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sam2_triton.export.contract import CONTRACTS
from sam2_triton.export.lint import lint_file, lint_model, load_operator_table


def test_operator_table_is_tensorrt_10():
    table = load_operator_table()
    assert table.opset_range == (9, 20)
    assert table.operators["MatMul"]["supported"] and not table.operators["Unique"]["supported"]


@pytest.mark.parametrize("network", list(CONTRACTS))
def test_exported_graphs_pass(exported, network):
    issues = lint_file(exported.directory / CONTRACTS[network].file)
    assert issues == [], "\n".join(map(str, issues))


def _graph(nodes, inputs, outputs, opset=17, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, elem=TensorProto.FLOAT, shape=(1, 4)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _problems(model):
    return " | ".join(str(i) for i in lint_model(model))


def test_flags_data_dependent_shapes():
    model = _graph(
        [helper.make_node("NonZero", ["x"], ["y"], name="nz")],
        [_vi("x")],
        [_vi("y", TensorProto.INT64, (2, "n"))],
    )
    assert "nz (NonZero): output shape depends on input values" in _problems(model)


def test_flags_unsupported_operator():
    model = _graph([helper.make_node("Unique", ["x"], ["y"], name="u")], [_vi("x")], [_vi("y")])
    assert "not supported by TensorRT" in _problems(model)


def test_flags_opset_and_custom_domain():
    node = helper.make_node("Rotary", ["x"], ["y"], name="r", domain="com.example")
    model = _graph([node], [_vi("x")], [_vi("y")], opset=21)
    problems = _problems(model)
    assert "opset 21 outside TensorRT's 9..20" in problems
    assert "custom domain 'com.example'" in problems


def test_flags_complex_and_double():
    nodes = [
        helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE, name="to_double"),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT, name="back"),
    ]
    model = _graph(nodes, [_vi("x")], [_vi("y")])
    assert "to_double (Cast): casts to float64" in _problems(model)
    complex_in = _graph(
        [helper.make_node("Identity", ["c"], ["y"], name="i")],
        [_vi("c", TensorProto.COMPLEX64)],
        [_vi("y", TensorProto.COMPLEX64)],
    )
    assert "dtype complex64" in _problems(complex_in)


def test_flags_cubic_resize_and_dynamic_axes():
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="up")
    model = _graph(
        [resize],
        [_vi("x", shape=(1, 1, 4, 4))],
        [_vi("y", shape=(1, 1, 8, 8))],
        initializers=[scales],
    )
    assert "Resize mode cubic unsupported" in _problems(model)
    squeeze = helper.make_node("Squeeze", ["x", "axes"], ["y"], name="sq")
    model = _graph(
        [squeeze], [_vi("x"), _vi("axes", TensorProto.INT64, (1,))], [_vi("y", shape=(4,))]
    )
    assert "sq (Squeeze): input 1 (axes) must be a constant" in _problems(model)


def test_clean_graph_passes():
    weight = onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    model = _graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [_vi("x")],
        [_vi("y")],
        initializers=[weight],
    )
    assert lint_model(model) == []
