"""Reading an ONNX model's top-level graph for ``ssd-eval inspect``: the file loaded (external weight data when
present, shapes inferred), element types and shapes, producer / consumer / constant lookups, the quantized op
counts, the quantization format (none, QOperator, QDQ) and an estimate of the GFLOPs per image."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssd_eval.errors import UserError

MS_DOMAIN = "com.microsoft"
STANDARD_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                      "QLinearMatMul", "ConvInteger", "MatMulInteger"}
MS_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QGemm", "QAttention", "DynamicQuantizeMatMul",
                "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "MatMulNBits",
                "MatMulBnb4", "QuantizeBFP", "DequantizeBFP", "QLinearConvTranspose"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FLOAT_MATRIX_OPS = {"Conv": (1,), "MatMul": (1, 0), "Gemm": (1, 0)}  # op type -> candidate weight inputs
# Quantized matrix ops: op type -> (candidate weight inputs, activation zero-point input or None).
QUANT_MATRIX_OPS = {
    "QLinearConv": ((3,), 2), "ConvInteger": ((1,), 2), "QLinearMatMul": ((3, 0), 2),
    "MatMulInteger": ((1, 0), 2), "QGemm": ((3, 0), 2), "MatMulIntegerToFloat": ((1, 0), 4),
    "DynamicQuantizeMatMul": ((1,), None),
}
CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}
GEMM_OPS = {"Gemm", "QGemm"}


@dataclass
class TensorInfo:
    """A graph input or output: name, element type (e.g. "float", "uint8") and shape (symbolic dims as strings)."""

    name: str
    type: str
    shape: list[int | str] | None


def type_name(elem_type: int) -> str:
    """An ONNX element type's name in lower case, e.g. "float", "uint8"."""
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def shape_of(type_proto: Any) -> list[int | str] | None:
    """A value's shape: ints, symbolic dims as their name (or "?"); None when unknown."""
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [int(dim.dim_value) if dim.HasField("dim_value") else dim.dim_param or "?" for dim in tensor.shape.dim]


def load_model(path: Path, notes: list[str]) -> tuple[Any, Any]:
    """The model at ``path``, with its external weight data where readable, and a copy with inferred shapes (the
    model itself where inference fails); ``notes`` gets what failed. UserError for a missing, unreadable or
    non-ONNX file."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends: not a model
        raise UserError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise UserError(f"{path}: not an ONNX model (no graph, IR version or opset)")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - an inference bug must not stop the report
        notes.append(f"shape inference failed ({type(exc).__name__}); GFLOPs cover only nodes with known shapes")
        inferred = model
    if any(uses_external_data(t) for t in model.graph.initializer):
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:  # noqa: BLE001 - a missing or short data file: report the structure without weights
            notes.append(f"external weight data not readable ({type(exc).__name__}: {exc}); "
                         "weight ranges of external tensors are unknown")
    return model, inferred


class Graph:
    """Lookups over the top-level graph: producers, consumers, constants, types and shapes."""

    def __init__(self, model: Any, inferred: Any) -> None:
        graph = model.graph
        self.nodes = list(graph.node)
        self.constants: dict[str, Any] = {t.name: t for t in graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        self.constants[node.output[0]] = attr.t
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.nodes:
            for name in filter(None, node.input):
                self.consumers[name].append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self.types: dict[str, tuple[int, list[int | str] | None]] = {}
        for value in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
            if value.type.HasField("tensor_type"):
                self.types[value.name] = (value.type.tensor_type.elem_type, shape_of(value.type))
        for name, tensor in self.constants.items():
            self.types[name] = (tensor.data_type, [int(d) for d in tensor.dims])

    def dtype(self, name: str) -> str | None:
        elem_type = self.types.get(name, (0, None))[0]
        return type_name(elem_type) if elem_type else None

    def shape(self, name: str) -> list[int | str] | None:
        return self.types.get(name, (0, None))[1]

    def produced_by(self, name: str) -> str | None:
        """The op type of the node that outputs ``name``; None when no node does."""
        node = self.producer.get(name)
        return node.op_type if node is not None else None

    @staticmethod
    def arg(node: Any, index: int) -> str:
        return node.input[index] if len(node.input) > index else ""


def graph_io(model: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The graph's inputs (initializers listed as inputs left out) and outputs."""
    def tensors(values: Any) -> list[TensorInfo]:
        return [TensorInfo(v.name, type_name(v.type.tensor_type.elem_type), shape_of(v.type)) for v in values]

    initializer_names = {t.name for t in model.graph.initializer}
    return tensors(v for v in model.graph.input if v.name not in initializer_names), tensors(model.graph.output)


def quantized_op_counts(model: Any) -> dict[str, int]:
    """How many of each quantized op the top-level graph holds (contrib ops as ``com.microsoft.<op>``), by name."""
    counts: Counter[str] = Counter()
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in STANDARD_QUANT_OPS:
            counts[node.op_type] += 1
        elif node.domain == MS_DOMAIN and (node.op_type in MS_QUANT_OPS
                                           or node.op_type.startswith(("QLinear", "QOrdered"))):
            counts[f"{MS_DOMAIN}.{node.op_type}"] += 1
    return dict(sorted(counts.items()))


QUANTIZATION_FORMATS = ("none", "QOperator", "QDQ")
"""What quant_format tells a model apart by (provenance.model.quantization, a baseline's ``quantization``)."""


def quant_format(graph: Graph, counts: dict[str, int]) -> str:
    """The model's quantization format (one of QUANTIZATION_FORMATS), from its graph and quantized op counts."""
    if any(op.rsplit(".", 1)[-1] not in QDQ_OPS for op in counts):
        return "QOperator"
    dequantized_matrix_op = any(
        node.op_type in FLOAT_MATRIX_OPS and node.domain in ("", "ai.onnx")
        and any(graph.produced_by(name) == "DequantizeLinear" for name in node.input) for node in graph.nodes)
    quantize_dequantize = any(  # Q -> DQ pairs around other ops are still the QDQ format
        node.op_type == "DequantizeLinear" and graph.produced_by(graph.arg(node, 0)) == "QuantizeLinear"
        for node in graph.nodes)
    return "QDQ" if dequantized_matrix_op or quantize_dequantize else "none"


def _known(dims: list[int | str]) -> bool:
    return all(isinstance(d, int) and d > 0 for d in dims)


def _numel(shape: list[int | str] | None) -> int | None:
    """Elements of a shape, a symbolic leading (batch) dim counted as 1; None when unknown."""
    if shape is None:
        return None
    if len(shape) > 1 and not _known(shape[:1]):
        shape = shape[1:]
    return math.prod(shape) if _known(shape) else None


def _macs(graph: Graph, node: Any) -> int | None:
    op = node.op_type
    out = _numel(graph.shape(node.output[0])) if node.output else None
    if out is None:
        return None
    if op in CONV_OPS:
        weight = graph.shape(graph.arg(node, 3 if op == "QLinearConv" else 1))
        if not weight or len(weight) < 3 or not _known(weight[1:]):
            return None
        return out * math.prod(weight[1:])
    a_shape = graph.shape(graph.arg(node, 0))
    if not a_shape or not _known(a_shape[-1:]):
        return None
    if op in GEMM_OPS:
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        if len(a_shape) != 2 or not isinstance(a_shape[0], int):
            return None
        return out * (a_shape[0] if trans_a else a_shape[1])
    return out * a_shape[-1]


def gflops(graph: Graph, inputs: list[TensorInfo]) -> tuple[float, int]:
    """(GFLOPs per image, Conv/MatMul/Gemm nodes skipped for unknown shapes): GFLOPs are 2 x the nodes'
    multiply-accumulates from the inferred shapes, divided by a fixed batch dim."""
    macs = [_macs(graph, node) for node in graph.nodes
            if node.op_type in {*FLOAT_MATRIX_OPS, *QUANT_MATRIX_OPS} and node.domain in ("", "ai.onnx", MS_DOMAIN)]
    batch = inputs[0].shape[0] if inputs and inputs[0].shape else 1
    per_image = 2 * sum(m for m in macs if m is not None) / (batch if isinstance(batch, int) and batch > 0 else 1)
    return per_image / 1e9, macs.count(None)
