"""``ssd-eval inspect``'s text: a model's file, format, I/O, quantized ops, int8 weight ranges and the verdict."""

from __future__ import annotations

from ssd_eval.inference.cpu import describe
from ssd_eval.inference.model_info import ModelInfo, verdict

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
