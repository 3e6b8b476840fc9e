"""``ssd-eval bench``: the speed of each model alone, fp32 and its quantized variants interleaved, and each
quantized variant's speedup over its fp32 parent. ``ForeignLoad`` and the text helpers serve the harness
benchmark too (ssd_eval.testing.bench_harness).
"""

from __future__ import annotations

import collections
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ssd_eval.config.load import load_config, variant_configs
from ssd_eval.config.schema import Config
from ssd_eval.errors import UserError
from ssd_eval.results.summary import align_columns

# Other processes using more than this many cores make a timing untrustworthy.
QUIET_LOAD_CORES = 0.25


def configs_for_bench(variant: str | None, *, configs_dir: str | Path = "configs") -> list[Config]:
    """The configs ``bench`` compares for ``variant`` (default ``sample``), parents first: a quantized variant with
    its fp32 parent (``model.parent``); an fp32 variant with every variant whose parent it is."""
    name = variant or "sample"
    paths = variant_configs(configs_dir)
    if name not in paths:
        raise UserError(f"bench: unknown variant {name!r}; choose one of {', '.join(paths)}")
    configs = {n: load_config(path) for n, path in paths.items()}
    parent = configs[name].model.parent
    if parent:
        if parent not in configs:
            raise UserError(f"{paths[name]}: model.parent {parent!r} has no config in {configs_dir}")
        return [configs[parent], configs[name]]
    return [configs[name]] + [c for n, c in configs.items() if c.model.parent == name]


def int8_twins(configs: Sequence[Config], *, compare_exact_int8: bool = False) -> list[tuple[Config, str, dict]]:
    """(config, label, session config) for each model as ``eval`` runs it (exact int8 where the CPU's u8s8 kernels
    could saturate), and for a quantized model whose exact and native int8 differ (every one with
    ``compare_exact_int8``) the other way too, labelled ``<variant> (native int8)`` or ``(exact int8)``."""
    from ssd_eval.inference import cpu, model_info

    capability = cpu.detect_int8_capability()
    entries = []
    for config in configs:
        info = model_info.inspect_model(config.model.path, capability)
        used = model_info.int8_session_config(info, config.runtime.session_config,
                                              exact_int8=config.runtime.exact_int8)
        entries.append((config, config.variant, used))
        if info.quantization_format == "none" or not (compare_exact_int8 or used != config.runtime.session_config):
            continue
        exact = used.get(model_info.PRECISION_KEY) == "1"
        other = dict(used, **{model_info.PRECISION_KEY: "0" if exact else "1"})
        entries.append((config, f"{config.variant} ({'native' if exact else 'exact'} int8)", other))
    return entries


def bench_models(configs: Sequence[Config], *, warmup: int = 2, iterations: int = 20, seed: int = 0,
                 compare_exact_int8: bool = False) -> dict:
    """Latency and throughput of each model alone (batch 1, one fixed random input, ``int8_twins``), interleaved:
    prints a report and returns its numbers, with ``speedups`` over each ``model.parent`` run with the same setup."""
    import onnxruntime as ort

    from ssd_eval.engine.provenance import host_info
    from ssd_eval.inference.runner import create_session, resolve_io

    if not configs:
        raise UserError("bench: no models to benchmark")
    if iterations < 1 or warmup < 0:
        raise UserError("bench: iterations must be at least 1 and warmup not negative")
    _check_model_files(configs)
    duplicated = sorted(v for v, count in collections.Counter(c.variant for c in configs).items() if count > 1)
    if duplicated:
        raise UserError(f"bench: variant {duplicated[0]!r} is given more than once")

    rng = np.random.default_rng(seed)
    inputs: dict[tuple[int, ...], np.ndarray] = {}  # one random input per input size
    runs = []  # (config, label, session config, session, output names, feed), one per model timed
    for config, label, session_config in int8_twins(configs, compare_exact_int8=compare_exact_int8):
        session = create_session(config.model.path, config.runtime, session_config=session_config)
        io = resolve_io(session, config.model, config.model.path)
        size = tuple(int(v) for v in config.preprocess.input_size)
        if size not in inputs:
            inputs[size] = rng.standard_normal((1, 3, *size), dtype=np.float32)
        runs.append((config, label, session_config, session, [io.boxes, io.labels, io.scores],
                     {io.input_name: inputs[size]}))

    host = host_info()
    print("== bench: models alone (batch 1, one fixed random input, variants interleaved round-robin)")
    print(f"cpu: {host['cpu']}  cores: {host['cores']}  onnxruntime: {ort.__version__}")
    for config, label, session_config, session, _, _ in runs:
        entries = ", ".join(f"{k}={v}" for k, v in sorted(session_config.items())) or "none"
        print(f"  {label}: providers {', '.join(session.get_providers())}; "
              f"intra_op_threads {_threads_text(config.runtime.intra_op_threads, per_core=True)}, "
              f"inter_op_threads {_threads_text(config.runtime.inter_op_threads, per_core=False)}; "
              f"session config {entries}; model {config.model.path}")
    print(f"warmup {warmup} + {iterations} timed runs per model")

    latencies: list[list[float]] = [[] for _ in runs]
    for _ in range(warmup):
        for *_, session, outputs, feed in runs:
            session.run(outputs, feed)
    with ForeignLoad() as load:
        for round_index in range(iterations):
            # Each round starts with the next variant, so none always follows the same one.
            for offset in range(len(runs)):
                index = (round_index + offset) % len(runs)
                *_, session, outputs, feed = runs[index]
                started = time.perf_counter()
                session.run(outputs, feed)
                latencies[index].append(time.perf_counter() - started)

    models = [{"variant": label, "session_config": session_config, "parent": config.model.parent,
               "model": str(config.model.path), "providers": list(session.get_providers()),
               "intra_op_threads": config.runtime.intra_op_threads,
               "inter_op_threads": config.runtime.inter_op_threads, **latency_stats(times)}
              for (config, label, session_config, session, _, _), times in zip(runs, latencies)]
    by_variant = {m["variant"]: m for m in models}
    speedups = {}
    for model in models:
        parent = by_variant.get(model["parent"])
        if parent and any(parent[k] != model[k] for k in ("providers", "intra_op_threads", "inter_op_threads")):
            print(f"({model['variant']}: no speedup vs {parent['variant']}: providers or threads differ)")
        elif parent:
            speedups[model["variant"]] = {"parent": parent["variant"], "speedup": parent["mean_ms"] / model["mean_ms"],
                                          "speedup_p50": parent["p50_ms"] / model["p50_ms"]}
    _print_table(
        ["variant", "images/s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "speedup vs parent"],
        [[m["variant"], *(f"{m[k]:.2f}" for k in ("images_per_s", "mean_ms", "p50_ms", "p90_ms", "p99_ms")),
          f"{speedups[m['variant']]['speedup']:.2f}x vs {m['parent']}" if m["variant"] in speedups else "-"]
         for m in models])
    if any(m["parent"] and m["variant"] not in speedups for m in models):
        print("(a quantized variant's speedup is shown only when its parent is in the same run)")
    print(f"other processes used {_load_text(load.cores)} cores while timing"
          + ("" if load.cores is None or load.cores <= QUIET_LOAD_CORES
             else " (the machine was busy: absolute numbers suffer; interleaving spreads it over all variants)"))
    if speedups:
        print("Model Zoo claim for reference: int8 3.49x faster than fp32 (Xeon Platinum 8280, 4 cores per "
              "instance, batch 1)")
    return {"cpu": host["cpu"], "cores": host["cores"], "onnxruntime": ort.__version__, "warmup": warmup,
            "iterations": iterations, "seed": seed,
            "input_shape": [1, 3, *(int(v) for v in configs[0].preprocess.input_size)],
            "foreign_load_cores": load.cores, "models": models, "speedups": speedups}


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """images/s (batch 1) and mean/p50/p90/p99 latency in milliseconds of per-call times."""
    values = np.asarray(seconds, dtype=np.float64)
    if values.size == 0:
        raise ValueError("latency_stats needs at least one measurement")
    p50, p90, p99 = (float(v) for v in np.percentile(values * 1000.0, [50, 90, 99]))
    total = float(values.sum())
    return {"runs": int(values.size), "images_per_s": values.size / total if total > 0 else math.inf,
            "mean_ms": float(values.mean() * 1000.0), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99}


def _check_model_files(configs: Sequence[Config]) -> None:
    missing = []
    for config in configs:
        if Path(config.model.path).is_file():
            continue
        if config.model.url:
            how = f"run 'make models MODEL={config.variant}'"
        elif config.variant.startswith("sample"):
            how = "run 'make sample' to generate it"
        else:
            how = "set model.path to an existing copy"
        missing.append(f"{config.model.path} ({config.variant}): {how}")
    if missing:
        raise UserError("bench: model file not found: " + "; ".join(missing))


def _threads_text(count: int, *, per_core: bool) -> str:
    if count:
        return str(count)
    return "0 (onnxruntime default: one thread per physical core)" if per_core else "0 (onnxruntime default)"


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    print(align_columns(headers, rows))


def _load_text(cores: float | None) -> str:
    return "?" if cores is None else f"{cores:.2f}"


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the memory probes)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _busy_snapshot() -> tuple[float, float, float] | None:
    """CPU seconds the machine and this process were busy, and the time (None without /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK"), _cpu_seconds(), time.perf_counter()


class ForeignLoad:
    """CPU used by other processes while a ``with`` block runs, in cores, set as ``cores`` on exit (None without
    /proc/stat); time the hypervisor stole counts, this process's finished children do not."""

    cores: float | None = None

    def __enter__(self) -> "ForeignLoad":
        self._start = _busy_snapshot()
        return self

    def __exit__(self, *exc) -> None:
        end = _busy_snapshot()
        if self._start is not None and end is not None and end[2] > self._start[2]:
            self.cores = max(0.0, ((end[0] - self._start[0]) - (end[1] - self._start[1])) / (end[2] - self._start[2]))
