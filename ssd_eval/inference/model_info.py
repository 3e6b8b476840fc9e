"""What an ONNX model is, for ``ssd-eval inspect``: inputs and outputs, opset, quantization format,
quantized op counts, the int8 weight range of every quantized Conv/MatMul/Gemm, whether this CPU's
int8 path can saturate on it, sha256 and an estimate of GFLOPs per image.

Saturation: on x86 without VNNI/AMX onnxruntime's u8s8 kernels sum pairs of uint8 x int8 products
in saturating int16; 2 * 255 * 64 fits, 2 * 255 * 128 does not, so int8 weights outside [-64, 63]
(what reduce_range / ``session.x64quantprecision`` keep to) can clip. QDQ Conv/MatMul/Gemm only get
int8 kernels when onnxruntime fuses them (graph optimization ``extended`` or ``all``; a Conv also
needs a QuantizeLinear after it), otherwise they run in float and cannot saturate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssd_eval.errors import UserError
from ssd_eval.inference.cpu import Int8Capability, describe, detect_int8_capability
from ssd_eval.utils import sha256_of

SAFE_RANGE = (-64, 63)
PRECISION_KEY = "session.x64quantprecision"  # onnxruntime: exact u8s8 on x86 CPUs without VNNI
MS_DOMAIN = "com.microsoft"
STANDARD_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                      "QLinearMatMul", "ConvInteger", "MatMulInteger"}
MS_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QGemm", "QAttention", "DynamicQuantizeMatMul",
                "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "MatMulNBits",
                "MatMulBnb4", "QuantizeBFP", "DequantizeBFP", "QLinearConvTranspose"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Quantized matrix ops: op type -> (candidate weight inputs, activation zero-point input or None).
QUANT_MATRIX_OPS = {
    "QLinearConv": ((3,), 2), "ConvInteger": ((1,), 2), "QLinearMatMul": ((3, 0), 2),
    "MatMulInteger": ((1, 0), 2), "QGemm": ((3, 0), 2), "MatMulIntegerToFloat": ((1, 0), 4),
    "DynamicQuantizeMatMul": ((1,), None),
}
FLOAT_MATRIX_OPS = {"Conv": (1,), "MatMul": (1, 0), "Gemm": (1, 0)}
CONV_OPS = {"Conv", "ConvInteger", "QLinearConv"}
MATMUL_OPS = {"MatMul", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
GEMM_OPS = {"Gemm", "QGemm"}
WEIGHT_ROWS = 20


@dataclass
class TensorInfo:
    """A graph input or output: name, element type (e.g. "float", "uint8") and shape (symbolic dims as strings)."""

    name: str
    type: str
    shape: list[int | str] | None


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


@dataclass
class ModelInfo:
    """Everything ``ssd-eval inspect`` reports about one model (``to_dict`` for JSON)."""

    path: str
    sha256: str
    size: int
    opset: int | None
    ir_version: int
    producer: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    node_count: int
    quantization_format: str
    quantized_op_counts: dict[str, int]
    weight_ranges: list[WeightRange]
    saturation_risk: bool
    can_saturate_here: bool | None
    capability: Int8Capability
    gflops: float
    gflops_skipped_nodes: int
    notes: list[str] = field(default_factory=list)

    @property
    def risky_ops(self) -> list[WeightRange]:
        """The u8s8 int8-kernel ops whose weights leave [-64, 63]."""
        return [w for w in self.weight_ranges if w.u8s8 and w.int8_kernel and w.outside_safe_range]

    @property
    def u8s8_ops(self) -> list[WeightRange]:
        """The ops onnxruntime runs with u8s8 int8 kernels."""
        return [w for w in self.weight_ranges if w.u8s8 and w.int8_kernel]

    def to_dict(self) -> dict:
        """A JSON-ready mapping (the capability nested, ``safe_range`` added)."""
        data = asdict(self)
        data["capability"] = self.capability.to_dict()
        data["safe_range"] = list(SAFE_RANGE)
        data["gflops"] = round(self.gflops, 4)
        return data


def _type_name(elem_type: int) -> str:
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


def _shape(type_proto: Any) -> list[int | str] | None:
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def _load(path: Path) -> Any:
    try:
        import onnx
    except ImportError:
        raise UserError(f"{path}: inspecting a model needs the onnx package (pip install onnx, "
                        "or pip install -e '.[dev]')") from None
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
    return model


def _load_external(model: Any, path: Path, notes: list[str]) -> None:
    from onnx import TensorProto
    from onnx.external_data_helper import load_external_data_for_model

    external = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return
    try:
        load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # noqa: BLE001 - a missing or short data file: report the structure without weights
        notes.append(f"external weight data not readable ({type(exc).__name__}: {exc}); "
                     "weight ranges of external tensors are unknown")


def _array(tensor: Any) -> Any:
    from onnx import TensorProto, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except Exception:  # noqa: BLE001 - an unusual encoding: the range is reported as unknown
        return None


class _Graph:
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
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self.types: dict[str, tuple[int, list[int | str] | None]] = {}
        for value in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
            if value.type.HasField("tensor_type"):
                self.types[value.name] = (value.type.tensor_type.elem_type, _shape(value.type))
        for name, tensor in self.constants.items():
            self.types[name] = (tensor.data_type, [int(d) for d in tensor.dims])

    def dtype(self, name: str) -> str | None:
        if name in self.types and self.types[name][0]:
            return _type_name(self.types[name][0])
        return None

    def shape(self, name: str) -> list[int | str] | None:
        return self.types.get(name, (0, None))[1]

    @staticmethod
    def arg(node: Any, index: int) -> str:
        return node.input[index] if len(node.input) > index else ""


QUANTIZATION_FORMATS = ("none", "QOperator", "QDQ")
"""What _quant_format tells a model apart by (provenance.model.quantization, a baseline's ``quantization``)."""


def _quant_format(graph: _Graph, counts: dict[str, int]) -> str:
    qoperator = [op for op in counts if op.rsplit(".", 1)[-1] not in QDQ_OPS]
    if qoperator:
        return "QOperator"
    for node in graph.nodes:
        if node.op_type in FLOAT_MATRIX_OPS and node.domain in ("", "ai.onnx") and \
                any(graph.producer.get(name) is not None and graph.producer[name].op_type == "DequantizeLinear"
                    for name in node.input if name):
            return "QDQ"
    for node in graph.nodes:  # Q -> DQ pairs around other ops are still the QDQ format
        if node.op_type == "DequantizeLinear":
            source = graph.producer.get(graph.arg(node, 0))
            if source is not None and source.op_type == "QuantizeLinear":
                return "QDQ"
    return "none"


def _weight_entry(graph: _Graph, node: Any, weight_name: str | None, activation: str | None,
                  int8_kernel: bool, needs_fusion: bool) -> WeightRange:
    weight_dtype = low = high = outside = None
    if weight_name:
        weight_dtype = graph.dtype(weight_name)
        tensor = graph.constants.get(weight_name)
        values = _array(tensor) if tensor is not None else None
        if values is not None and values.size:
            low, high = int(values.min()), int(values.max())
            outside = bool(low < SAFE_RANGE[0] or high > SAFE_RANGE[1])
    u8s8 = activation == "uint8" and weight_dtype == "int8"
    return WeightRange(node=node.name or f"{node.op_type}:{node.output[0]}", op_type=node.op_type, weight=weight_name,
                       weight_dtype=weight_dtype, min=low, max=high, activation_dtype=activation, u8s8=u8s8,
                       int8_kernel=int8_kernel, needs_fusion=needs_fusion, outside_safe_range=outside)


def _quant_activation_dtype(graph: _Graph, node: Any, zp_index: int | None) -> str | None:
    if node.op_type == "DynamicQuantizeMatMul":
        return "uint8"  # activations are quantized to uint8 on the fly
    zero_point = graph.arg(node, zp_index) if zp_index is not None else ""
    if zero_point:
        found = graph.dtype(zero_point)
        if found:
            return found
    return graph.dtype(graph.arg(node, 0))


def _weight_ranges(graph: _Graph) -> list[WeightRange]:
    entries = []
    for node in graph.nodes:
        if node.op_type in QUANT_MATRIX_OPS and node.domain in ("", "ai.onnx", MS_DOMAIN):
            candidates, zp_index = QUANT_MATRIX_OPS[node.op_type]
            weight = next((graph.arg(node, i) for i in candidates if graph.arg(node, i) in graph.constants), None)
            activation = _quant_activation_dtype(graph, node, zp_index)
            entries.append(_weight_entry(graph, node, weight, activation, int8_kernel=True, needs_fusion=False))
        elif node.op_type in FLOAT_MATRIX_OPS and node.domain in ("", "ai.onnx"):
            dequantized = {}
            for index in FLOAT_MATRIX_OPS[node.op_type]:
                source = graph.producer.get(graph.arg(node, index))
                if source is not None and source.op_type == "DequantizeLinear" and \
                        graph.arg(source, 0) in graph.constants:
                    dequantized[index] = source
            if not dequantized:
                continue
            index, dq_weight = next(iter(dequantized.items()))
            activation_name = graph.arg(node, 1 - index)
            other = graph.producer.get(activation_name)
            if other is not None and other.op_type == "DequantizeLinear":
                activation = (graph.dtype(graph.arg(other, 2)) if graph.arg(other, 2) else None) \
                    or graph.dtype(graph.arg(other, 0)) or "uint8"
            else:
                activation = graph.dtype(activation_name)
            int8_kernel = other is not None and other.op_type == "DequantizeLinear"
            if node.op_type == "Conv":  # onnxruntime fuses DQ -> Conv -> Q only: without the Q it runs float
                output = node.output[0]
                users = graph.consumers.get(output, [])
                int8_kernel = int8_kernel and bool(users) and output not in graph.graph_outputs and \
                    all(user.op_type == "QuantizeLinear" for user in users)
            entries.append(_weight_entry(graph, node, graph.arg(dq_weight, 0), activation,
                                         int8_kernel=int8_kernel, needs_fusion=True))
    return entries


def _numel(shape: list[int | str] | None) -> int | None:
    """Elements of a shape, a symbolic leading (batch) dim counted as 1; None when unknown."""
    if shape is None:
        return None
    total = 1
    for position, dim in enumerate(shape):
        if isinstance(dim, int) and dim > 0:
            total *= dim
        elif position == 0 and len(shape) > 1:
            continue
        else:
            return None
    return total


def _macs(graph: _Graph, node: Any) -> int | None:
    op = node.op_type
    out = _numel(graph.shape(node.output[0])) if node.output else None
    if out is None:
        return None
    if op in CONV_OPS:
        weight = graph.shape(graph.arg(node, 3 if op == "QLinearConv" else 1))
        if not weight or len(weight) < 3 or not all(isinstance(d, int) and d > 0 for d in weight[1:]):
            return None
        return out * math.prod(weight[1:])
    a_shape = graph.shape(graph.arg(node, 0))
    if not a_shape or not isinstance(a_shape[-1], int) or a_shape[-1] <= 0:
        return None
    if op in GEMM_OPS:
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        if len(a_shape) != 2 or not isinstance(a_shape[0], int):
            return None
        return out * (a_shape[0] if trans_a else a_shape[1])
    return out * a_shape[-1]


def _flops(graph: _Graph, inputs: list[TensorInfo]) -> tuple[float, int]:
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


def inspect_model(path: str | Path, capability: Int8Capability | None = None,
                  sha256: str | None = None) -> ModelInfo:
    """Describe the ONNX model at ``path``; ``capability`` defaults to this CPU's; ``sha256`` is the
    file's digest when the caller has it already (else it is computed).

    External weight data next to the model is loaded when present (weight ranges of tensors whose
    data is missing are reported as unknown). A missing, unreadable or non-ONNX file raises
    UserError naming it. Only the top-level graph is examined (subgraph ops are not counted).
    """
    import onnx

    path = Path(path)
    model = _load(path)
    notes: list[str] = []
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # noqa: BLE001 - an inference bug must not stop the report
        notes.append(f"shape inference failed ({type(exc).__name__}); GFLOPs cover only nodes with known shapes")
        inferred = model
    _load_external(model, path, notes)
    graph = _Graph(model, inferred)
    capability = capability or detect_int8_capability()

    counts: dict[str, int] = {}
    for node in model.graph.node:
        domain = node.domain or ""
        if (domain in ("", "ai.onnx") and node.op_type in STANDARD_QUANT_OPS) or \
                (domain == MS_DOMAIN and (node.op_type in MS_QUANT_OPS
                                          or node.op_type.startswith(("QLinear", "QOrdered")))):
            key = node.op_type if domain in ("", "ai.onnx") else f"{domain}.{node.op_type}"
            counts[key] = counts.get(key, 0) + 1
    counts = dict(sorted(counts.items()))

    def tensors(values: Any) -> list[TensorInfo]:
        return [TensorInfo(v.name, _type_name(v.type.tensor_type.elem_type), _shape(v.type)) for v in values]

    initializer_names = {t.name for t in model.graph.initializer}
    inputs = tensors(v for v in model.graph.input if v.name not in initializer_names)
    outputs = tensors(model.graph.output)
    weights = _weight_ranges(graph)
    risk = any(w.u8s8 and w.int8_kernel and w.outside_safe_range for w in weights)
    unknown = sum(1 for w in weights if w.u8s8 and w.int8_kernel and w.outside_safe_range is None)
    if unknown:
        notes.append(f"weight range unknown on {unknown} u8s8 op(s) (not a constant, or data not loaded)")
    if any(w.u8s8 and w.needs_fusion and w.int8_kernel for w in weights):
        notes.append("QDQ ops get int8 kernels only when onnxruntime fuses them "
                     "(runtime.graph_optimization extended or all); disable/basic run them in float")
    can_saturate = (capability.u8s8_can_saturate if risk else False)
    gflops, skipped = _flops(graph, inputs)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    producer = " ".join(filter(None, [model.producer_name, model.producer_version]))
    return ModelInfo(path=str(path), sha256=sha256 or sha256_of(path), size=path.stat().st_size, opset=opset,
                     ir_version=int(model.ir_version), producer=producer, inputs=inputs, outputs=outputs,
                     node_count=len(model.graph.node), quantization_format=_quant_format(graph, counts),
                     quantized_op_counts=counts, weight_ranges=weights, saturation_risk=risk,
                     can_saturate_here=can_saturate, capability=capability, gflops=gflops,
                     gflops_skipped_nodes=skipped, notes=notes)


SESSION_FIX = ("keep runtime.exact_int8: true (the default) or set runtime.session_config: "
               f"{{{PRECISION_KEY}: '1'}}")


def verdict(info: ModelInfo) -> str:
    """The one-sentence saturation verdict for this model on the capability it was inspected with."""
    cap = info.capability
    where = f"this CPU ({cap.kernel_class}{', no VNNI' if cap.u8s8_can_saturate else ''})"
    u8s8 = info.u8s8_ops
    if not info.weight_ranges or not u8s8:
        if info.quantization_format == "none":
            return "no quantized Conv/MatMul/Gemm: no saturation risk on any CPU"
        return "no u8s8 int8 Conv/MatMul/Gemm kernels: no saturation risk on this CPU"
    risky = info.risky_ops
    if not risky:
        ops = "the u8s8 op" if len(u8s8) == 1 else f"all {len(u8s8)} u8s8 ops"
        return f"int8 weights stay within [{SAFE_RANGE[0]}, {SAFE_RANGE[1]}] on {ops}: " \
               "no saturation risk on this CPU (nor any other)"
    head = f"int8 weights leave [{SAFE_RANGE[0]}, {SAFE_RANGE[1]}] on {len(risky)} of {len(u8s8)} u8s8 ops"
    if info.can_saturate_here is None:
        return f"{head}: cannot tell whether {where} saturates (kernel class unknown); " \
               f"{SESSION_FIX} to be safe on x86 without VNNI"
    if info.can_saturate_here:
        return f"{head}: on {where} onnxruntime's u8s8 kernels can saturate (int16 pair sums), so results " \
               f"can differ from a VNNI CPU's; {SESSION_FIX} for exact int8 (costs most of the int8 speedup)"
    return f"{head}, but {where} sums in int32: exact, no saturation risk on this CPU " \
           "(x86 CPUs without VNNI can saturate)"


def saturation_warning(info: ModelInfo, session_config: Mapping[str, Any] | None = None,
                       graph_optimization: str | None = None) -> str | None:
    """The one-line warning ``eval`` prints at start when saturation can apply, else None.

    None when this CPU's u8s8 path is exact or the model has no risky weights; also when
    ``session_config`` sets ``session.x64quantprecision`` to "1" and ``graph_optimization`` is not
    "disable" (then the kernels are exact), and for QDQ-only risk when ``graph_optimization`` is
    "disable" or "basic" (no fusion: the ops run in float).
    """
    if not info.can_saturate_here:
        return None
    risky = info.risky_ops
    if graph_optimization in ("disable", "basic"):
        risky = [w for w in risky if not w.needs_fusion]
        if not risky:
            return None
    precision = str((session_config or {}).get(PRECISION_KEY, "")).strip()
    if precision == "1" and graph_optimization != "disable":
        return None
    cap = info.capability
    fix = SESSION_FIX if graph_optimization != "disable" else \
        f"{SESSION_FIX} with runtime.graph_optimization other than disable"
    return (f"{Path(info.path).name}: int8 weights leave [{SAFE_RANGE[0]}, {SAFE_RANGE[1]}] on {len(risky)} of "
            f"{len(info.u8s8_ops)} u8s8 ops and this CPU ({cap.kernel_class}, no VNNI) sums u8s8 pairs in "
            f"saturating int16: mAP may be lower than on a VNNI CPU; {fix} for exact int8")


def _table(rows: list[list[str]], header: list[str], right: set[int] = frozenset()) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  " + "  ".join(cells).rstrip()
    return [line(header), *[line(r) for r in rows]]


def _dims(shape: list[int | str] | None) -> str:
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def render(info: ModelInfo) -> str:
    """A readable multi-line report of ``info`` (what ``ssd-eval inspect`` prints)."""
    size = f"{info.size / 1e6:.1f} MB" if info.size >= 1e5 else f"{info.size} bytes"
    lines = [
        f"model         {info.path}",
        f"sha256        {info.sha256}",
        f"size          {size}",
        f"format        ONNX IR {info.ir_version}, opset {info.opset}, {info.node_count} nodes"
        + (f", produced by {info.producer}" if info.producer else ""),
        f"quantization  {info.quantization_format}",
        f"GFLOPs/image  {info.gflops:.4g}" + (f" ({info.gflops_skipped_nodes} Conv/MatMul/Gemm nodes with "
                                                f"unknown shapes not counted)" if info.gflops_skipped_nodes else ""),
        f"CPU           {describe(info.capability)}",
        "",
        "inputs",
        *_table([[t.name, t.type, _dims(t.shape)] for t in info.inputs], ["name", "type", "shape"]),
        "outputs",
        *_table([[t.name, t.type, _dims(t.shape)] for t in info.outputs], ["name", "type", "shape"]),
    ]
    if info.quantized_op_counts:
        lines += ["", "quantized ops",
                  *_table([[op, str(n)] for op, n in info.quantized_op_counts.items()], ["op", "count"], {1})]
    if info.weight_ranges:
        shown = info.weight_ranges[:WEIGHT_ROWS]
        rows = []
        for w in shown:
            span = "?" if w.min is None else f"[{w.min}, {w.max}]"
            kind = f"{w.activation_dtype or '?'} x {w.weight_dtype or '?'}"
            kernel = ("int8 (fused)" if w.needs_fusion else "int8") if w.int8_kernel else "float"
            mark = "outside [-64, 63]" if w.outside_safe_range and w.u8s8 and w.int8_kernel else ""
            rows.append([w.node, w.op_type, kind, kernel, span, mark])
        lines += ["", "int8 weight range per op",
                  *_table(rows, ["node", "op", "act x weight", "kernel", "weight range", ""])]
        if len(info.weight_ranges) > WEIGHT_ROWS:
            rest = info.weight_ranges[WEIGHT_ROWS:]
            risky = sum(1 for w in rest if w.u8s8 and w.int8_kernel and w.outside_safe_range)
            lines.append(f"  ... {len(rest)} more ({risky} outside [-64, 63])")
    lines += ["", f"verdict: {verdict(info)}"]
    lines += [f"note: {note}" for note in info.notes]
    return "\n".join(lines)


def int8_session_config(info: ModelInfo, session_config: Mapping[str, str], *, exact_int8: bool) -> dict[str, str]:
    """The session config entries to run ``info``'s model with: ``session_config``, plus
    ``session.x64quantprecision=1`` where ``exact_int8`` holds and this CPU's u8s8 kernels could
    saturate on the model's weights (an explicit entry in ``session_config`` always wins)."""
    entries = dict(session_config)
    if exact_int8 and info.can_saturate_here and PRECISION_KEY not in entries:
        entries[PRECISION_KEY] = "1"
    return entries


def external_data_files(path: Path) -> list[str]:
    """The ONNX external-data file names (relative to the model's folder) a model's tensors refer to; none for a
    file onnx cannot read as a model (what is wrong with it is reported where the model is inspected)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf DecodeError and friends: not a model, so no external data
        return []
    # _get_all_tensors: initializers and tensor attributes, subgraphs included, as onnx's own loader walks them
    return sorted({ExternalDataInfo(tensor).location for tensor in _get_all_tensors(model)
                   if uses_external_data(tensor)})


def model_sha256(path: Path, file_sha256: str | None = None) -> str:
    """A model's sha256: of the .onnx file, or, when it keeps tensors in ONNX external-data files,
    of the .onnx file's digest and each data file's name and digest together. ``file_sha256`` is
    the .onnx file's own digest when the caller has it already."""
    path = Path(path)
    file_sha256 = file_sha256 or sha256_of(path)
    names = external_data_files(path)
    if not names:
        return file_sha256
    digest = hashlib.sha256(file_sha256.encode())
    for name in names:
        data_file = path.parent / name
        if not data_file.is_file():
            raise UserError(f"{path}: its external data file {data_file} is missing")
        digest.update(f"\n{name}\n{sha256_of(data_file)}".encode())
    return digest.hexdigest()
