"""An estimate of a model's GFLOPs per image: 2 x the multiply-accumulates of its Conv/MatMul/Gemm nodes, from
the inferred shapes (nodes whose shapes are unknown are counted as skipped)."""

from __future__ import annotations

import math
from typing import Any

from ssd_eval.inference.onnx_graph import MS_DOMAIN, Graph, TensorInfo

CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}
MATMUL_OPS = {"MatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
GEMM_OPS = {"Gemm", "QGemm"}


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
    """(GFLOPs per image, Conv/MatMul/Gemm nodes skipped for unknown shapes); a batch dim divides the total."""
    total = skipped = 0
    for node in graph.nodes:
        if node.op_type in CONV_OPS | MATMUL_OPS | GEMM_OPS and node.domain in ("", "ai.onnx", MS_DOMAIN):
            macs = _macs(graph, node)
            if macs is None:
                skipped += 1
            else:
                total += macs
    batch = inputs[0].shape[0] if inputs and inputs[0].shape else 1
    per_image = 2 * total / (batch if isinstance(batch, int) and batch > 0 else 1)
    return per_image / 1e9, skipped
