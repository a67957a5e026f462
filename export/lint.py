"""TensorRT compatibility lint for exported ONNX graphs.

Checks a graph against the operator table of TensorRT's ONNX parser (`tensorrt/onnx_operators.json`,
from onnx-tensorrt's operator documentation at the TensorRT 10.1 release): every operator
supported, the opset inside the parser's range, no complex or float64 tensors, no operator whose
output shape depends on tensor values, and the documented per-operator restrictions that can be
read off the graph. It runs without TensorRT, so it runs on every commit.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto

OPERATOR_TABLE = Path(__file__).resolve().parent / "tensorrt" / "onnx_operators.json"

# Output shape depends on the values of the input: TensorRT needs data-dependent-shape support
# (and such ops make engines slow and profiles meaningless); the networks must not contain them.
DATA_DEPENDENT_SHAPE_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})

FORBIDDEN_DTYPES = {
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
    TensorProto.DOUBLE: "float64",
    TensorProto.STRING: "string",
}

# Operators whose listed input must be a build-time constant (initializer or Constant node).
CONSTANT_INPUTS = {
    "ReduceMean": 1,
    "ReduceSum": 1,
    "ReduceMax": 1,
    "ReduceMin": 1,
    "ReduceProd": 1,
    "ReduceL1": 1,
    "ReduceL2": 1,
    "ReduceLogSum": 1,
    "ReduceLogSumExp": 1,
    "ReduceSumSquare": 1,
    "Slice": 3,
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Pad": 3,
    "CumSum": 1,
    "OneHot": 1,
}

RESIZE_MODES = {b"nearest", b"linear"}
RESIZE_COORDINATE_MODES = {
    b"half_pixel",
    b"pytorch_half_pixel",
    b"tf_half_pixel_for_nn",
    b"asymmetric",
    b"align_corners",
}


@dataclass(frozen=True)
class LintIssue:
    node: str
    op_type: str
    problem: str

    def __str__(self) -> str:
        return f"{self.node or '<graph>'} ({self.op_type}): {self.problem}"


@dataclass(frozen=True)
class OperatorTable:
    opset_range: tuple
    operators: dict[str, dict]
    source: str


@functools.cache
def load_operator_table(path: Path = OPERATOR_TABLE) -> OperatorTable:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return OperatorTable(tuple(data["opset_range"]), data["operators"], data.get("source", ""))


def lint_model(proto: onnx.ModelProto, table: OperatorTable | None = None) -> list[LintIssue]:
    """All reasons TensorRT's ONNX parser would reject `proto` (empty list: none found)."""
    table = table or load_operator_table()
    issues: list[LintIssue] = []
    issues += _check_opset(proto, table)
    constants = _constant_names(proto.graph)
    for node in _all_nodes(proto.graph):
        issues += _check_node(node, table, constants)
    issues += _check_dtypes(proto)
    return issues


def lint_file(path: Path, table: OperatorTable | None = None) -> list[LintIssue]:
    return lint_model(onnx.load(str(path), load_external_data=False), table)


def _check_opset(proto: onnx.ModelProto, table: OperatorTable) -> list[LintIssue]:
    low, high = table.opset_range
    issues = []
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx") and not low <= entry.version <= high:
            issues.append(
                LintIssue("", "opset", f"opset {entry.version} outside TensorRT's {low}..{high}")
            )
    return issues


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {init.name for init in graph.initializer}
    names |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    return names


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _check_node(node: onnx.NodeProto, table: OperatorTable, constants: set[str]) -> list[LintIssue]:
    issue = functools.partial(LintIssue, node.name, node.op_type)
    if node.domain not in ("", "ai.onnx"):
        return [issue(f"custom domain {node.domain!r} needs a TensorRT plugin")]
    entry = table.operators.get(node.op_type)
    if entry is None:
        return [issue("not in TensorRT's ONNX operator table")]
    if not entry["supported"]:
        return [issue("not supported by TensorRT's ONNX parser")]
    issues = []
    if node.op_type in DATA_DEPENDENT_SHAPE_OPS:
        issues.append(issue("output shape depends on input values"))
    index = CONSTANT_INPUTS.get(node.op_type)
    if index is not None and len(node.input) > index and node.input[index]:
        if node.input[index] not in constants:
            issues.append(issue(f"input {index} ({node.input[index]}) must be a constant"))
    if node.op_type == "Resize":
        mode = _attr(node, "mode", b"nearest")
        coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        if mode not in RESIZE_MODES:
            issues.append(issue(f"Resize mode {mode.decode()} unsupported (nearest, linear only)"))
        if coord not in RESIZE_COORDINATE_MODES:
            issues.append(issue(f"Resize coordinate mode {coord.decode()} unsupported"))
        if _attr(node, "antialias", 0):
            issues.append(issue("Resize antialiasing unsupported"))
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        issues.append(issue("MaxPool Indices output unsupported"))
    if node.op_type == "LayerNormalization" and any(node.output[1:]):
        issues.append(issue("only the first LayerNormalization output is supported"))
    if node.op_type == "TopK" and _attr(node, "sorted", 1) != 1:
        issues.append(issue("TopK must be sorted"))
    return issues


def _check_dtypes(proto: onnx.ModelProto) -> list[LintIssue]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is best effort; the declared types are still checked
        inferred = proto
    graph = inferred.graph
    issues = []
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    for value in values:
        elem = value.type.tensor_type.elem_type
        if elem in FORBIDDEN_DTYPES:
            issues.append(LintIssue(value.name, "tensor", f"dtype {FORBIDDEN_DTYPES[elem]}"))
    for init in graph.initializer:
        if init.data_type in FORBIDDEN_DTYPES:
            issues.append(
                LintIssue(init.name, "initializer", f"dtype {FORBIDDEN_DTYPES[init.data_type]}")
            )
    for node in graph.node:
        if node.op_type == "Cast" and _attr(node, "to") in FORBIDDEN_DTYPES:
            issues.append(
                LintIssue(node.name, "Cast", f"casts to {FORBIDDEN_DTYPES[_attr(node, 'to')]}")
            )
    return issues
