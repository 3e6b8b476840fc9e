#!/usr/bin/env bash
# The CUDA path on a GPU machine: which providers onnxruntime offers, the sample on the CPU and on
# CUDA side by side (stats, images/s), the cache keeping them apart, `eval --jobs 2` on one GPU
# (tests/test_cuda.py, numbers printed), the runner / launcher / pipeline tests with CUDA present, then
# the harness's throughput against a bare session.run loop on CUDA with the SSD-sized synthetic
# detector (bench-harness section (a); IMAGES, default 48).
#
#   tools/check_cuda.sh                     (onnxruntime-gpu importable by $PY, default .venv/bin/python)
#
# Not part of `make test` or CI (no GPU there; tests/test_cuda.py skips without CUDA). Exits non-zero
# when CUDA is missing or a test fails. docs/TESTING.md has the last readings.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

nvidia-smi -L || { echo "$0: nvidia-smi found no GPU" >&2; exit 2; }
"$PY" - <<'PYTHON' || exit 2
import sys
import onnxruntime as ort
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, "providers:", ", ".join(providers))
sys.exit(0 if "CUDAExecutionProvider" in providers else f"{sys.argv[0]}: no CUDAExecutionProvider")
PYTHON
status=0
"$PY" -m pytest -q -s -rs -p no:cacheprovider tests/test_cuda.py || status=1
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_runner.py tests/test_launcher.py tests/test_pipeline.py || status=1
"$PY" - <<'PYTHON' || status=1
import os, tempfile
from pathlib import Path
from ssd_eval.testing.bench_harness import bench_throughput
from ssd_eval.testing.synthetic import SSD_LIKE_DETECTOR
with tempfile.TemporaryDirectory() as folder:
    bench_throughput(Path(folder), images=int(os.environ.get("IMAGES", "48")), repeats=2, spec=SSD_LIKE_DETECTOR,
                     providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
PYTHON
exit $status
