#!/usr/bin/env bash
# Do the sample models give the same COCO stats on other x86-64 CPUs?
#
# Evaluates each model with the harness natively and under qemu-user emulating
# older CPUs, prints mAP / AP50 / AP75 per CPU and whether detections.json is
# byte-identical to the native run, and exits 1 if any stats differ from native.
#
#   tools/check_cpu_portability.sh [MODEL.onnx ...]     (default: the three sample models)
#   CPUS="native Haswell" tools/check_cpu_portability.sh
#
# Needs qemu-user (apt-get install qemu-user) and the .venv. Not part of the tests:
# qemu's TCG cannot emulate AVX-512 or VNNI, so native covers those only when the
# machine has them; Haswell is AVX2 + FMA, SandyBridge AVX without AVX2 or FMA,
# Nehalem SSE4.2 without AVX (onnxruntime's SSE kernels). Under qemu OpenBLAS (in
# numpy) picks kernels the emulated CPU lacks and dies of SIGILL, so each run names
# its CPU in OPENBLAS_CORETYPE.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
CPUS=${CPUS:-native Haswell SandyBridge Nehalem}
QEMU=${QEMU:-qemu-x86_64}
if [ "$#" -eq 0 ]; then
    set -- data/sample/models/sample.onnx data/sample/models/sample-int8.onnx data/sample/models/sample-qdq.onnx
fi
command -v "$QEMU" >/dev/null || { echo "$0: $QEMU not found (apt-get install qemu-user)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/cpu_portability.XXXXXX")
trap 'rm -rf "$work"' EXIT

status=0
printf '| model | cpu | mAP | AP50 | AP75 | detections.json as native | seconds |\n|---|---|---|---|---|---|---|\n'
for model in "$@"; do
    name=$(basename "$model" .onnx)
    native_stats=""
    for cpu in $CPUS; do
        out="$work/$name-$cpu"
        run=("$PY" -m ssd_eval eval --config configs/sample.yaml --model "$model" --out "$out" --fresh --no-progress)
        [ "$cpu" = native ] || run=(env OPENBLAS_CORETYPE="$cpu" "$QEMU" -cpu "$cpu" "${run[@]}")
        start=$(date +%s)
        if ! "${run[@]}" >"$out.log" 2>&1; then
            printf '| %s | %s | failed: %s |  |  |  |  |\n' "$name" "$cpu" "$(grep -v 'TCG doesn' "$out.log" | tail -1)"
            status=1
            continue
        fi
        seconds=$(( $(date +%s) - start ))
        stats=$("$PY" -c 'import json, sys; m = json.load(open(sys.argv[1])); print(" | ".join(f"{m[k]:.6f}" for k in ("mAP", "AP50", "AP75")))' "$out/metrics.json")
        if [ -z "$native_stats" ]; then
            native_stats=$stats native_dir=$out same=reference
        else
            cmp -s "$native_dir/detections.json" "$out/detections.json" && same=yes || same=no
            [ "$stats" = "$native_stats" ] || status=1
        fi
        printf '| %s | %s | %s | %s | %s |\n' "$name" "$cpu" "$stats" "$same" "$seconds"
    done
done
[ "$status" -eq 0 ] && echo "same stats on every CPU" || echo "STATS DIFFER between CPUs (or a run failed)"
exit "$status"
