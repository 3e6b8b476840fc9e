"""Does session.x64quantprecision=1 make onnxruntime's u8s8 convolutions exact on this CPU?

For a one-conv u8s8 model with full-range int8 weights ([-128, 127]) and one with 7-bit weights
([-64, 63]), in QOperator (QLinearConv, against onnx's ReferenceEvaluator) and QDQ form (Q/DQ
around a float Conv that onnxruntime fuses into QLinearConv, against the same graph run unfused
in float), prints the share of outputs that differ with the option off and on.

On a VNNI CPU every row is 0 %. Run it under qemu to see a CPU without VNNI, e.g.
``OPENBLAS_CORETYPE=Haswell qemu-x86_64 -cpu Haswell .venv/bin/python tools/check_exact_int8.py``
(``make portability`` does). Exit 1 when a row with the option on differs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import int8_conv_model  # noqa: E402  (the test suite's model builder)

LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def run(path: Path, image: np.ndarray, *, precision: str, level: str = "all") -> np.ndarray:
    """The model's output from onnxruntime with the given x64quantprecision and optimization level."""
    options = ort.SessionOptions()
    options.graph_optimization_level = LEVELS[level]
    options.add_session_config_entry("session.x64quantprecision", precision)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0].astype(np.float64)


def main() -> int:
    rng = np.random.default_rng(0)
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("qoperator", "qdq"):
            for weights in ((-128, 127), (-64, 63)):
                path = int8_conv_model(Path(folder) / f"{kind}{weights[0]}.onnx", kind, weight_range=weights)
                if kind == "qoperator":
                    image = rng.integers(0, 256, (1, 3, 64, 64)).astype(np.uint8)
                    truth = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": image})[0].astype(np.float64)
                else:
                    image = rng.uniform(-2, 2, (1, 3, 64, 64)).astype(np.float32)
                    truth = run(path, image, precision="0", level="disable")
                for precision in ("0", "1"):
                    differ = np.abs(run(path, image, precision=precision) - truth) > 1e-6
                    share = 100 * float(differ.mean())
                    if precision == "1":
                        worst = max(worst, share)
                    print(f"{kind:9s} weights {str(weights):11s} x64quantprecision={precision}: "
                          f"{share:5.1f} % of outputs differ")
    return 1 if worst > 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
