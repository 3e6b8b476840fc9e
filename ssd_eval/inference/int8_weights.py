"""The int8 weight range of every quantized Conv/MatMul/Gemm, and whether onnxruntime runs it with u8s8 kernels.

Saturation: on x86 without VNNI/AMX onnxruntime's u8s8 kernels sum pairs of uint8 x int8 products
in saturating int16; 2 * 255 * 64 fits, 2 * 255 * 128 does not, so int8 weights outside [-64, 63]
(what reduce_range / ``session.x64quantprecision`` keep to) can clip. QDQ Conv/MatMul/Gemm only get
int8 kernels when onnxruntime fuses them (graph optimization ``extended`` or ``all``; a Conv also
needs a QuantizeLinear after it), otherwise they run in float and cannot saturate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssd_eval.inference.onnx_graph import FLOAT_MATRIX_OPS, MS_DOMAIN, Graph

SAFE_RANGE = (-64, 63)
# Quantized matrix ops: op type -> (candidate weight inputs, activation zero-point input or None).
QUANT_MATRIX_OPS = {
    "QLinearConv": ((3,), 2), "ConvInteger": ((1,), 2), "QLinearMatMul": ((3, 0), 2),
    "MatMulInteger": ((1, 0), 2), "QGemm": ((3, 0), 2), "MatMulIntegerToFloat": ((1, 0), 4),
    "DynamicQuantizeMatMul": ((1,), None),
}


@dataclass
class WeightRange:
    """The int8 weight of one quantized Conv/MatMul/Gemm and what it means for u8s8 kernels.

    ``min``/``max`` are None where the weight is not a constant or its data was not loaded.
    ``int8_kernel``: onnxruntime runs the node with an int8 kernel (QDQ nodes only once fused, see
    ``needs_fusion``). ``u8s8``: uint8 activations times int8 weights, the case that can saturate.
    """

    node: str
    op_type: str
    weight: str | None
    weight_dtype: str | None
    min: int | None
    max: int | None
    activation_dtype: str | None
    u8s8: bool
    int8_kernel: bool
    needs_fusion: bool
    outside_safe_range: bool | None


def _values(tensor: Any) -> Any:
    """A constant's values; None where its data is external (not loaded) or in an encoding numpy_helper cannot read."""
    from onnx import TensorProto, numpy_helper

    if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except Exception:  # noqa: BLE001 - an unusual encoding: the range is reported as unknown
        return None


def _weight_entry(graph: Graph, node: Any, weight_name: str | None, activation: str | None,
                  int8_kernel: bool, needs_fusion: bool) -> WeightRange:
    weight_dtype = low = high = outside = None
    if weight_name:
        weight_dtype = graph.dtype(weight_name)
        values = _values(graph.constants.get(weight_name))
        if values is not None and values.size:
            low, high = int(values.min()), int(values.max())
            outside = bool(low < SAFE_RANGE[0] or high > SAFE_RANGE[1])
    u8s8 = activation == "uint8" and weight_dtype == "int8"
    return WeightRange(node=node.name or f"{node.op_type}:{node.output[0]}", op_type=node.op_type, weight=weight_name,
                       weight_dtype=weight_dtype, min=low, max=high, activation_dtype=activation, u8s8=u8s8,
                       int8_kernel=int8_kernel, needs_fusion=needs_fusion, outside_safe_range=outside)


def weight_ranges(graph: Graph) -> list[WeightRange]:
    """One entry per quantized Conv/MatMul/Gemm (QOperator ops, and float ops fed by a DequantizeLinear weight)."""
    entries = []
    for node in graph.nodes:
        if node.op_type in QUANT_MATRIX_OPS and node.domain in ("", "ai.onnx", MS_DOMAIN):
            candidates, zp_index = QUANT_MATRIX_OPS[node.op_type]
            weight = next((graph.arg(node, i) for i in candidates if graph.arg(node, i) in graph.constants), None)
            if zp_index is None:  # DynamicQuantizeMatMul quantizes its activations to uint8 on the fly
                activation = "uint8"
            else:
                activation = graph.dtype(graph.arg(node, zp_index)) or graph.dtype(graph.arg(node, 0))
            entries.append(_weight_entry(graph, node, weight, activation, int8_kernel=True, needs_fusion=False))
        elif node.op_type in FLOAT_MATRIX_OPS and node.domain in ("", "ai.onnx"):
            dq_weight = None
            for weight_index in FLOAT_MATRIX_OPS[node.op_type]:
                source = graph.producer.get(graph.arg(node, weight_index))
                if source is not None and source.op_type == "DequantizeLinear" and \
                        graph.arg(source, 0) in graph.constants:
                    dq_weight = source
                    break
            if dq_weight is None:
                continue
            activation_name = graph.arg(node, 1 - weight_index)
            int8_kernel = graph.produced_by(activation_name) == "DequantizeLinear"  # activations dequantized too
            if int8_kernel:
                dq_activation = graph.producer[activation_name]
                activation = graph.dtype(graph.arg(dq_activation, 2)) or graph.dtype(graph.arg(dq_activation, 0)) \
                    or "uint8"
            else:
                activation = graph.dtype(activation_name)
            if node.op_type == "Conv":  # onnxruntime fuses DQ -> Conv -> Q only: without the Q it runs float
                output = node.output[0]
                users = graph.consumers.get(output, [])
                int8_kernel = int8_kernel and bool(users) and output not in graph.graph_outputs and \
                    all(user.op_type == "QuantizeLinear" for user in users)
            entries.append(_weight_entry(graph, node, graph.arg(dq_weight, 0), activation,
                                         int8_kernel=int8_kernel, needs_fusion=True))
    return entries
