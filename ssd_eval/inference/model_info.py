"""What an ONNX model is (``inspect_model``): its int8 weight ranges, whether this CPU's int8 path can saturate on
them (the verdict, the warning ``eval`` prints, the session config that keeps int8 exact), and its content sha256
with external data; and the text ``ssd-eval inspect`` prints (``render``).

u8s8 kernels that sum pairs in int16 (cpu.py) clip int8 weights outside [-64, 63] (2 * 255 * 64 fits,
2 * 255 * 128 does not; what reduce_range / ``session.x64quantprecision`` keep to). QDQ Conv/MatMul/Gemm get int8
kernels only when onnxruntime fuses them (graph optimization ``extended`` or ``all``; a Conv also needs a
QuantizeLinear after it); otherwise they run in float.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssd_eval.errors import UserError
from ssd_eval.inference.cpu import Int8Capability, describe, detect_int8_capability
from ssd_eval.inference.onnx_graph import (
    FLOAT_MATRIX_OPS,
    MS_DOMAIN,
    QUANT_MATRIX_OPS,
    Graph,
    TensorInfo,
    gflops,
    graph_io,
    load_model,
    quant_format,
    quantized_op_counts,
)
from ssd_eval.utils import sha256_of

PRECISION_KEY = "session.x64quantprecision"  # onnxruntime: exact u8s8 on x86 CPUs without VNNI
SAFE_RANGE = (-64, 63)


@dataclass
class WeightRange:
    """The int8 weight of one quantized Conv/MatMul/Gemm (``min``/``max`` None where unknown), whether onnxruntime
    runs it with an int8 kernel (QDQ ones only once fused: ``needs_fusion``), and with u8s8 (the saturating case)."""

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


def _weight_entry(graph: Graph, node: Any, weight_name: str | None, activation: str | None,
                  int8_kernel: bool, needs_fusion: bool) -> WeightRange:
    """The WeightRange of ``node``; min/max None where the weight's data is not loaded or not readable."""
    from onnx import TensorProto, numpy_helper

    weight_dtype = low = high = outside = None
    if weight_name:
        weight_dtype = graph.dtype(weight_name)
        tensor = graph.constants[weight_name]  # both callers pick a constant
        try:
            values = None if tensor.data_location == TensorProto.EXTERNAL else numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001 - an unusual encoding: the range is reported as unknown
            values = None
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
            weight_index = next((i for i in FLOAT_MATRIX_OPS[node.op_type]
                                 if graph.produced_by(graph.arg(node, i)) == "DequantizeLinear"
                                 and graph.arg(graph.producer[graph.arg(node, i)], 0) in graph.constants), None)
            if weight_index is None:
                continue
            dq_weight = graph.producer[graph.arg(node, weight_index)]
            activation_name = graph.arg(node, 1 - weight_index)
            int8_kernel = graph.produced_by(activation_name) == "DequantizeLinear"  # activations dequantized too
            if int8_kernel:
                dq_activation = graph.producer[activation_name]
                activation = graph.dtype(graph.arg(dq_activation, 2)) or graph.dtype(graph.arg(dq_activation, 0)) \
                    or "uint8"
            else:
                activation = graph.dtype(activation_name)
            if node.op_type == "Conv":  # onnxruntime fuses DQ -> Conv -> Q only: without the Q it runs float
                users = graph.consumers.get(node.output[0], [])
                int8_kernel = int8_kernel and bool(users) and node.output[0] not in graph.graph_outputs and \
                    all(user.op_type == "QuantizeLinear" for user in users)
            entries.append(_weight_entry(graph, node, graph.arg(dq_weight, 0), activation,
                                         int8_kernel=int8_kernel, needs_fusion=True))
    return entries


def _u8s8(weights: list[WeightRange]) -> list[WeightRange]:
    return [w for w in weights if w.u8s8 and w.int8_kernel]


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
    def u8s8_ops(self) -> list[WeightRange]:
        """The ops onnxruntime runs with u8s8 int8 kernels."""
        return _u8s8(self.weight_ranges)

    @property
    def risky_ops(self) -> list[WeightRange]:
        """The u8s8 int8-kernel ops whose weights leave [-64, 63]."""
        return [w for w in self.u8s8_ops if w.outside_safe_range]

    def to_dict(self) -> dict:
        """A JSON-ready mapping (the capability nested, ``safe_range`` added)."""
        data = asdict(self)
        data["safe_range"] = list(SAFE_RANGE)
        data["gflops"] = round(self.gflops, 4)
        return data


def inspect_model(path: str | Path, capability: Int8Capability | None = None,
                  sha256: str | None = None) -> ModelInfo:
    """Describe the ONNX model at ``path`` (its top-level graph, with external weight data where readable) on
    ``capability`` (default: this CPU's); ``sha256``: the file's digest if known. UserError for a missing,
    unreadable or non-ONNX file."""
    path = Path(path)
    notes: list[str] = []
    model, inferred = load_model(path, notes)
    graph = Graph(model, inferred)
    capability = capability or detect_int8_capability()
    counts = quantized_op_counts(model)
    inputs, outputs = graph_io(model)
    weights = weight_ranges(graph)
    u8s8 = _u8s8(weights)
    risk = any(w.outside_safe_range for w in u8s8)
    unknown = sum(w.outside_safe_range is None for w in u8s8)
    if unknown:
        notes.append(f"weight range unknown on {unknown} u8s8 op(s) (not a constant, or data not loaded)")
    if any(w.needs_fusion for w in u8s8):
        notes.append("QDQ ops get int8 kernels only when onnxruntime fuses them "
                     "(runtime.graph_optimization extended or all); disable/basic run them in float")
    gflops_per_image, skipped = gflops(graph, inputs)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    producer = " ".join(filter(None, [model.producer_name, model.producer_version]))
    return ModelInfo(path=str(path), sha256=sha256 or sha256_of(path), size=path.stat().st_size, opset=opset,
                     ir_version=int(model.ir_version), producer=producer, inputs=inputs, outputs=outputs,
                     node_count=len(model.graph.node), quantization_format=quant_format(graph, counts),
                     quantized_op_counts=counts, weight_ranges=weights, saturation_risk=risk,
                     can_saturate_here=capability.u8s8_can_saturate if risk else False, capability=capability,
                     gflops=gflops_per_image, gflops_skipped_nodes=skipped, notes=notes)


SESSION_FIX = ("keep runtime.exact_int8: true (the default) or set runtime.session_config: "
               f"{{{PRECISION_KEY}: '1'}}")


def verdict(info: ModelInfo) -> str:
    """The one-sentence saturation verdict for this model on the capability it was inspected with."""
    cap = info.capability
    where = f"this CPU ({cap.kernel_class}{', no VNNI' if cap.u8s8_can_saturate else ''})"
    u8s8 = info.u8s8_ops
    if not u8s8:
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
    """The one-line warning ``eval`` prints at start when saturation can apply, else None: not when
    ``session_config`` sets ``session.x64quantprecision`` to "1" (unless ``graph_optimization`` is "disable"),
    nor for QDQ-only risk under "disable" or "basic" (no fusion: the ops run in float)."""
    unfused = graph_optimization in ("disable", "basic")
    risky = [w for w in info.risky_ops if not (unfused and w.needs_fusion)]
    precision = str((session_config or {}).get(PRECISION_KEY, "")).strip()
    if not info.can_saturate_here or not risky or (precision == "1" and graph_optimization != "disable"):
        return None
    fix = SESSION_FIX if graph_optimization != "disable" else \
        f"{SESSION_FIX} with runtime.graph_optimization other than disable"
    return (f"{Path(info.path).name}: int8 weights leave [{SAFE_RANGE[0]}, {SAFE_RANGE[1]}] on {len(risky)} of "
            f"{len(info.u8s8_ops)} u8s8 ops and this CPU ({info.capability.kernel_class}, no VNNI) sums u8s8 pairs "
            f"in saturating int16: mAP may be lower than on a VNNI CPU; {fix} for exact int8")


def int8_session_config(info: ModelInfo, session_config: Mapping[str, str], *, exact_int8: bool) -> dict[str, str]:
    """``session_config`` plus ``session.x64quantprecision=1`` where ``exact_int8`` holds and this CPU's u8s8
    kernels could saturate on the model's weights (an explicit entry in ``session_config`` wins)."""
    entries = dict(session_config)
    if exact_int8 and info.can_saturate_here and PRECISION_KEY not in entries:
        entries[PRECISION_KEY] = "1"
    return entries


def external_data_files(path: Path) -> list[str]:
    """The ONNX external-data file names (relative to the model's folder) a model's tensors refer to; none for a
    file onnx cannot read as a model (inspect_model reports what is wrong with it)."""
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
    """A model's sha256: of the .onnx file (``file_sha256`` if known), or with external-data files, of that
    digest and each data file's name and digest together."""
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


WEIGHT_ROWS = 20


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
        rows = []
        for w in info.weight_ranges[:WEIGHT_ROWS]:
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
