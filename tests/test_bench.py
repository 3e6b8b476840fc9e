"""Tests of ssd_eval.engine.bench: shapes of the reports and the synthetic data, never timings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ssd_eval.config.load import config_from_dict
from ssd_eval.config.schema import RuntimeConfig
from ssd_eval.engine import bench
from ssd_eval.errors import UserError
from ssd_eval.inference.runner import create_session
from ssd_eval.testing import bench_harness as harness
from ssd_eval.testing import synthetic

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
TINY = synthetic.DetectorSpec(input_size=(64, 64), channels=(4, 8, 8), extra_convs=(0, 1, 0), detections=20)


def tiny_config(tmp_path: Path, variant: str, *, parent: str | None = None, seed: int = 0,
                url: str | None = None, write: bool = True):
    model_path = tmp_path / f"{variant}.onnx"
    if write:
        synthetic.write_synthetic_detector(model_path, synthetic.DetectorSpec(**{**TINY.__dict__, "seed": seed}))
    return config_from_dict({
        "variant": variant,
        "model": {"path": str(model_path), "parent": parent, "url": url},
        "dataset": {"annotations": str(tmp_path / "annotations.json"), "images": str(tmp_path / "images")},
        "preprocess": {"input_size": [64, 64]},
        "runtime": {"intra_op_threads": 1},
    })


def run_model(model_path: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    session = create_session(model_path, RuntimeConfig(intra_op_threads=1))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": image})))


# ------------------------------------------------------------------ bench_models


@pytest.mark.parametrize("iterations, warmup", [(0, 1), (5, -1)])
def test_bench_models_refuses_no_iterations_or_a_negative_warmup(tmp_path, iterations, warmup):
    with pytest.raises(UserError, match="iterations must be at least 1 and warmup not negative"):
        bench.bench_models([tiny_config(tmp_path, "tiny")], warmup=warmup, iterations=iterations)


def test_bench_models_report_is_well_formed(tmp_path, capsys):
    configs = [
        tiny_config(tmp_path, "tiny"),
        tiny_config(tmp_path, "tiny-int8", parent="tiny", seed=1),
        tiny_config(tmp_path, "orphan-int8", parent="not-in-this-run", seed=2),
    ]
    report = bench.bench_models(configs, warmup=1, iterations=5, seed=3)

    assert [m["variant"] for m in report["models"]] == ["tiny", "tiny-int8", "orphan-int8"]
    for model in report["models"]:
        assert model["runs"] == 5
        assert 0 < model["p50_ms"] <= model["p90_ms"] <= model["p99_ms"]
        assert model["images_per_s"] > 0
        assert model["providers"] == ["CPUExecutionProvider"]
        assert model["intra_op_threads"] == 1
    assert set(report["speedups"]) == {"tiny-int8"}
    speedup = report["speedups"]["tiny-int8"]
    assert speedup["parent"] == "tiny"
    by_variant = {m["variant"]: m for m in report["models"]}
    # Speedup = parent latency / quantized latency (higher means the quantized one is faster).
    assert speedup["speedup"] == pytest.approx(by_variant["tiny"]["mean_ms"] / by_variant["tiny-int8"]["mean_ms"])
    assert speedup["speedup_p50"] == pytest.approx(by_variant["tiny"]["p50_ms"] / by_variant["tiny-int8"]["p50_ms"])
    assert report["onnxruntime"] == ort.__version__
    assert report["input_shape"] == [1, 3, 64, 64]
    assert report["cores"] >= 1 and report["cpu"]
    json.dumps(report)  # plain data only

    out = capsys.readouterr().out
    assert "onnxruntime" in out and "cores" in out and "CPUExecutionProvider" in out
    assert "intra_op_threads 1" in out
    assert "vs tiny" in out


def test_bench_models_missing_model_is_a_user_error(tmp_path):
    present = tiny_config(tmp_path, "ssd-12")
    missing = tiny_config(tmp_path, "ssd-12-int8", parent="ssd-12", write=False, url="https://example.invalid/m.onnx")
    with pytest.raises(UserError) as caught:
        bench.bench_models([present, missing], iterations=1)
    message = str(caught.value)
    assert "\n" not in message
    assert "ssd-12-int8.onnx" in message and "make models MODEL=ssd-12-int8" in message

    sample = tiny_config(tmp_path, "sample-qdq", write=False)
    with pytest.raises(UserError, match="make sample"):
        bench.bench_models([sample], iterations=1)


def test_bench_models_rejects_duplicates_and_empty(tmp_path):
    config = tiny_config(tmp_path, "tiny")
    with pytest.raises(UserError, match="more than once"):
        bench.bench_models([config, config], iterations=1)
    with pytest.raises(UserError):
        bench.bench_models([], iterations=1)


def test_latency_stats_percentiles_are_ordered():
    stats = bench.latency_stats([0.010, 0.030, 0.020, 0.011, 0.5])
    assert stats["runs"] == 5
    assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= 500.0
    # numpy's linear interpolation on [10, 11, 20, 30, 500] ms
    assert stats["p50_ms"] == pytest.approx(20.0)
    assert stats["p90_ms"] == pytest.approx(312.0)
    assert stats["p99_ms"] == pytest.approx(481.2)
    assert stats["images_per_s"] == pytest.approx(5 / 0.571)
    assert stats["mean_ms"] == pytest.approx(571 / 5)


# ------------------------------------------------------------------ configs_for_bench


@pytest.mark.parametrize("variant, expected", [
    (None, ["sample", "sample-int8", "sample-qdq"]),
    ("sample", ["sample", "sample-int8", "sample-qdq"]),
    ("ssd-12", ["ssd-12", "ssd-12-int8", "ssd-12-qdq"]),
    ("ssd-12-int8", ["ssd-12", "ssd-12-int8"]),
    ("ssd-12-qdq", ["ssd-12", "ssd-12-qdq"]),
    ("ssd-10", ["ssd-10"]),
])
def test_configs_for_bench(variant, expected):
    configs = bench.configs_for_bench(variant, configs_dir=CONFIGS_DIR)
    assert [c.variant for c in configs] == expected
    for config in configs[1:]:
        if config.variant != "ssd-10":
            assert config.model.parent == expected[0]


def test_configs_for_bench_unknown_variant():
    with pytest.raises(UserError, match="ssd-12-qdq"):
        bench.configs_for_bench("ssd-13", configs_dir=CONFIGS_DIR)


# ------------------------------------------------------------------ synthetic model and data


def check_contract(outputs: dict[str, np.ndarray], detections: int) -> None:
    boxes, labels, scores = outputs["bboxes"], outputs["labels"], outputs["scores"]
    assert boxes.shape == (1, detections, 4) and boxes.dtype == np.float32
    assert labels.shape == (1, detections) and labels.dtype == np.int64
    assert scores.shape == (1, detections) and scores.dtype == np.float32
    assert np.all((boxes >= 0) & (boxes <= 1))
    assert np.all(boxes[..., 0] <= boxes[..., 2]) and np.all(boxes[..., 1] <= boxes[..., 3])
    assert labels.min() >= 1 and labels.max() <= 80
    assert np.all(np.diff(scores[0]) <= 0)
    assert np.all((scores > 0) & (scores <= 1))


@pytest.mark.parametrize("spec", [synthetic.CHEAP_DETECTOR, synthetic.COSTLY_DETECTOR, TINY],
                         ids=["cheap", "costly", "tiny"])
def test_synthetic_detector_meets_the_output_contract(tmp_path, spec):
    path = synthetic.write_synthetic_detector(tmp_path / "model.onnx", spec)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, *spec.input_size), dtype=np.float32)
    outputs = run_model(path, image)
    check_contract(outputs, spec.detections)
    # The detections depend on the pixels.
    other = run_model(path, np.flip(image, axis=3).copy())
    assert not np.array_equal(outputs["scores"], other["scores"])


def test_synthetic_detector_is_deterministic_and_gives_varied_labels(tmp_path):
    first = synthetic.build_synthetic_detector(TINY).SerializeToString()
    assert first == synthetic.build_synthetic_detector(TINY).SerializeToString()
    path = synthetic.write_synthetic_detector(tmp_path / "model.onnx", TINY)
    image = np.random.default_rng(1).standard_normal((1, 3, 64, 64), dtype=np.float32)
    assert len(set(run_model(path, image)["labels"][0].tolist())) > 1


def test_synthetic_detector_rejects_more_detections_than_anchors():
    with pytest.raises(ValueError, match="anchors"):
        synthetic.build_synthetic_detector(synthetic.DetectorSpec(input_size=(16, 16), channels=(4, 4),
                                                                  extra_convs=(0, 0),
                                                          detections=17))


def test_synthetic_coco_and_an_evaluation_on_it(tmp_path):
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.engine.pipeline import evaluate

    annotations, images = synthetic.write_synthetic_coco(tmp_path / "coco", 6, seed=4, size_range=(40, 80))
    dataset = load_annotations(annotations, images)
    assert len(dataset.images) == 6
    assert dataset.category_ids == list(synthetic.COCO_CATEGORY_IDS) and len(dataset.category_ids) == 80
    assert all(r.path.is_file() for r in dataset.images.values())
    # Same seed, same files.
    again, _ = synthetic.write_synthetic_coco(tmp_path / "again", 6, seed=4, size_range=(40, 80))
    assert again.read_bytes() == annotations.read_bytes()

    model = synthetic.write_synthetic_detector(tmp_path / "model.onnx", TINY)
    config = harness.harness_config(model, annotations, images, tmp_path / "out", input_size=TINY.input_size)
    result = evaluate(config, fresh=True, progress=False)
    assert result.provenance["images"] == 6
    assert result.provenance["detections"] == 6 * TINY.detections


def test_measure_peak_rss_runs_in_a_fresh_process(tmp_path):
    annotations, images = synthetic.write_synthetic_coco(tmp_path / "coco", 3, seed=5, size_range=(40, 60))
    model = synthetic.write_synthetic_detector(tmp_path / "model.onnx", TINY)
    config = harness.harness_config(model, annotations, images, tmp_path / "out", limit=2, input_size=TINY.input_size)
    measured = harness.measure_peak_rss(config)
    assert measured["images"] == 2
    assert measured["maxrss_kb"] >= measured["maxrss_before_kb"] > 0
    if Path("/proc/self/status").exists():
        # Not ru_maxrss, which a child inherits from its (here: larger or smaller) parent.
        assert measured["source"] == "VmHWM"


# ------------------------------------------------------------------ scoring


def test_synthetic_scoring_case_is_deterministic_and_valid():
    gt, detections, image_ids = synthetic.synthetic_scoring_case(12, 15, seed=7)
    assert image_ids == list(range(1, 13))
    assert len(detections) == 12 * 15
    assert (gt, detections) == synthetic.synthetic_scoring_case(12, 15, seed=7)[:2]
    categories = set(synthetic.COCO_CATEGORY_IDS)
    assert all(d["category_id"] in categories and d["image_id"] in image_ids for d in detections)
    assert all(d["bbox"][2] >= 0 and d["bbox"][3] >= 0 for d in detections)


def test_scoring_backends_agree_on_a_small_case():
    pytest.importorskip("hotcoco")
    gt, detections, image_ids = synthetic.synthetic_scoring_case(30, 20, seed=11)
    compared = harness.compare_scoring_backends(gt, detections, image_ids)
    slow = compared["backends"]["pycocotools"]
    fast = compared["backends"]["hotcoco"]
    assert len(slow["stats"]) == len(fast["stats"]) == 12
    assert compared["agree"] and compared["max_stat_difference"] <= 1e-9
    assert slow["stats"] == pytest.approx(fast["stats"], abs=1e-9)
    assert 0 < slow["stats"][0] < 1  # a case with something to measure
    assert slow["seconds"] > 0 and fast["seconds"] > 0


def test_harness_sections_run_on_tiny_sizes(tmp_path, capsys):
    throughput = harness.bench_throughput(tmp_path / "t", images=2, repeats=1, spec=synthetic.CHEAP_DETECTOR)
    assert throughput["ratio"] == pytest.approx(throughput["harness_images_per_s"] / throughput["bare_images_per_s"])
    memory = harness.bench_memory(tmp_path / "m", sizes=(2, 4), quick=True)
    assert list(memory["modes"]) == ["pipeline", "pycocotools streaming", "pycocotools @200",
                                     "pycocotools streaming @200"]
    pipeline = memory["modes"]["pipeline"]
    assert memory["growth"] == pytest.approx(pipeline["peak_rss_mb"][1] / pipeline["peak_rss_mb"][0] - 1)
    assert [run["images"] for run in pipeline["runs"]] == [2, 4]
    dense = memory["modes"]["pycocotools streaming @200"]
    assert [run["detections"] for run in dense["runs"]] == [2 * 200, 4 * 200]  # max_detections: all
    assert dense["streaming"] and dense["target"] == 0.20 and memory["modes"]["pycocotools @200"]["target"] is None
    assert memory["streaming_pass"] == all(m["pass"] for m in memory["modes"].values() if m["streaming"])
    if dense["scoring_phase_peak_mb"] is not None:  # each phase's peak, measured apart (Linux)
        phases = zip(dense["pipeline_phase_peak_mb"], dense["scoring_phase_peak_mb"])
        assert all(whole >= max(phase) for whole, phase in zip(dense["peak_rss_mb"], phases))
    scoring = harness.bench_scoring(images=20, detections_per_image=(10, 20))
    assert scoring["agree"] and scoring["detections"] == 200
    assert [size["detections"] for size in scoring["sizes"]] == [200, 400]
    out = capsys.readouterr().out
    assert "ratio" in out and "pipeline growth" in out and "streaming" in out
    assert all(name in out for name in harness.installed_backends())
    labels = [label for label, _, _ in harness.scorers()]
    assert set(scoring["seconds"]) == set(labels) >= {*harness.installed_backends(), "pycocotools streaming"}


def test_no_speedup_between_different_thread_settings(tmp_path, capsys):
    parent = tiny_config(tmp_path, "tiny")
    child = tiny_config(tmp_path, "tiny-int8", parent="tiny", seed=1)
    child.runtime.intra_op_threads = 2
    report = bench.bench_models([parent, child], warmup=1, iterations=2)
    assert report["speedups"] == {}
    assert "threads differ" in capsys.readouterr().out


def test_exact_int8_cost_is_timed_beside_the_native_path(capsys):
    configs = bench.configs_for_bench("sample")
    report = bench.bench_models(configs, warmup=0, iterations=2, compare_exact_int8=True)
    by_variant = {m["variant"]: m for m in report["models"]}
    assert by_variant["sample-int8 (exact int8)"]["session_config"] == {"session.x64quantprecision": "1"}
    assert by_variant["sample-int8"]["session_config"] == {}  # this sample's weights cannot saturate anywhere
    assert "sample (exact int8)" not in by_variant  # fp32 has no int8 path
    assert report["speedups"]["sample-int8 (exact int8)"]["parent"] == "sample"
    assert "session config session.x64quantprecision=1" in capsys.readouterr().out


def test_where_int8_can_saturate_bench_times_eval_s_exact_path_and_the_native_one(monkeypatch, tmp_path):
    from ssd_eval.inference import model_info
    from ssd_eval.inference.cpu import detect_int8_capability

    from helpers import int8_conv_model

    avx2 = detect_int8_capability("processor: 0\nmodel name: AMD EPYC\nflags: sse4_1 avx2\n", "x86_64")
    risky = model_info.inspect_model(int8_conv_model(tmp_path / "risky.onnx"), avx2)
    monkeypatch.setattr(model_info, "inspect_model", lambda path, capability=None, sha256=None: risky)
    entries = bench.int8_twins(bench.configs_for_bench("sample-int8"))
    labels = {label: session_config for _, label, session_config in entries}
    assert labels["sample-int8"] == {"session.x64quantprecision": "1"}  # as eval runs it
    assert labels["sample-int8 (native int8)"] == {"session.x64quantprecision": "0"}


def test_a_fifth_variant_is_one_config_file(tmp_path):
    """Bench groups come from model.parent: a new quantized config joins its parent's group."""
    import shutil

    from ssd_eval.config.load import variant_configs

    for name in ("base", "sample", "sample-int8", "sample-qdq"):
        shutil.copy(f"configs/{name}.yaml", tmp_path / f"{name}.yaml")
    (tmp_path / "sample-fp16.yaml").write_text(
        "extends: sample.yaml\nvariant: sample-fp16\n"
        "model:\n  path: data/sample/models/sample.onnx\n  parent: sample\n")
    assert list(variant_configs(tmp_path)) == ["sample", "sample-fp16", "sample-int8", "sample-qdq"]
    group = [c.variant for c in bench.configs_for_bench("sample", configs_dir=tmp_path)]
    assert group == ["sample", "sample-fp16", "sample-int8", "sample-qdq"]
    pair = bench.configs_for_bench("sample-fp16", configs_dir=tmp_path)
    assert [c.variant for c in pair] == ["sample", "sample-fp16"]
    with pytest.raises(UserError, match="unknown variant 'nope'"):
        bench.configs_for_bench("nope", configs_dir=tmp_path)


# --------------------------------------------------------------------------- issue 11: what each figure means


def test_a_ratio_measured_under_other_load_says_it_is_unreliable():
    assert harness.unreliable_reason(0.1, 0.25) is None and harness.unreliable_reason(None, None) is None
    assert harness.unreliable_reason(0.52, 0.1) == "unreliable: other processes used 0.52 cores during the bare loop"
    assert harness.unreliable_reason(1.0, 0.98) == ("unreliable: other processes used 1.00 cores during the bare loop "
                                                  "and 0.98 cores during the harness run")


def test_memory_figures_say_what_they_measure(tmp_path, monkeypatch, capsys):
    """Issue 11: a pipeline-memory MISS was labelled as scoring memory."""
    def fake_probe(config, *, score=True):  # the pipeline grows 15 % (a MISS); whole runs 5 %
        small = config.dataset.limit == 2
        base = 200_000 if small else (230_000 if not score else 210_000)
        return {"maxrss_kb": base, "maxrss_before_kb": 1, "images": config.dataset.limit, "detections": 0}

    monkeypatch.setattr(harness, "measure_peak_rss", fake_probe)
    memory = harness.bench_memory(tmp_path, sizes=(2, 4), spec=synthetic.CHEAP_DETECTOR, quick=True)
    out = capsys.readouterr().out
    for mode in memory["modes"].values():
        expected = ("image pipeline peak RSS" if mode["backend"] is None else "whole run incl. scoring")
        assert mode["measures"].startswith(expected)
    [verdict] = [line for line in out.splitlines() if "target < 10 %: MISS" in line and "growth 15.0 %" in line]
    assert verdict.strip().startswith("image pipeline peak RSS (no scoring): pipeline growth 15.0 %")
    assert "scoring memory" not in out


def test_harness_config_runs_on_the_providers_asked_for(tmp_path):
    from ssd_eval.testing.bench_harness import harness_config

    asked = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    config = harness_config(tmp_path / "m.onnx", tmp_path / "a.json", tmp_path / "images", tmp_path / "out",
                            providers=asked)
    assert config.runtime.providers == asked
    default = harness_config(tmp_path / "m.onnx", tmp_path / "a.json", tmp_path / "images", tmp_path / "out")
    assert default.runtime.providers == ["CPUExecutionProvider"]


def test_bench_harness_reports_each_section_s_wall_and_cpu_time(tmp_path, monkeypatch, capsys):
    """--quick was documented as a minute and took minutes: the report says where the time went."""
    calls = {}

    def fake(name, value):
        def section(*args, **kwargs):
            calls[name] = kwargs
            return value
        return section

    monkeypatch.setattr(harness, "bench_throughput", fake("throughput", {"ratio": 1.0, "pass": True}))
    monkeypatch.setattr(harness, "bench_memory", fake("memory", {"growth": 0.01, "pass": True, "modes": {}}))
    monkeypatch.setattr(harness, "bench_scoring", fake("scoring", {"speedup": {"pycocotools": 1.0}, "agree": True}))
    monkeypatch.setattr(harness, "bench_int8", fake("int8", {"models": {"int8": {
        "ratio": 0.8, "share_of_limit": 0.95, "limit": 0.84}}, "unreliable": None}))
    monkeypatch.setattr(harness, "bench_int8_preprocess", fake("preprocess", {
        "routes": ["opencv-lut", "numpy-take"], "protocols": {"coco": {"total_ms": {"a": 15.0, "b": 17.1}}}}))
    report = harness.bench_harness(quick=True, work_dir=tmp_path, results_path=tmp_path / "bench.json")
    assert calls["throughput"]["images"] == harness.QUICK_THROUGHPUT_IMAGES
    assert calls["memory"]["sizes"] == harness.QUICK_MEMORY_SIZES
    assert calls["scoring"]["images"] == harness.QUICK_SCORING_IMAGES
    assert calls["int8"]["images"] == harness.QUICK_INT8_IMAGES and calls["int8"]["spec"] == synthetic.COSTLY_DETECTOR
    assert set(report["section_seconds"]) == set(report["section_cpu_seconds"]) == {
        "throughput", "memory", "scoring", "int8", "preprocess"}
    assert calls["preprocess"]["images"] == 8
    assert report["cpu_seconds"] >= 0 and report["total_seconds"] >= sum(report["section_seconds"].values())
    summary = capsys.readouterr().out.splitlines()[-2]
    assert summary.startswith("== summary:") and "s of CPU" in summary and "throughput" in summary
    assert json.loads((tmp_path / "bench.json").read_text())["section_seconds"].keys() == calls.keys()


def test_int8_section_runs_on_tiny_sizes_and_its_numbers_agree(tmp_path, capsys):
    """Issue 26: fp32, QOperator int8 and QDQ, bare and through the harness, with the physical limit.
    Never a timing: the section runs and its numbers are consistent with each other."""
    section = harness.bench_int8(tmp_path / "int8", images=2, repeats=1, spec=TINY)
    assert list(section["models"]) == ["fp32", "int8", "qdq"]
    import onnx

    ops = {name: {node.op_type for node in onnx.load(section["models"][name]["model"]).graph.node}
           for name in section["models"]}
    assert "QLinearConv" in ops["int8"] and "QuantizeLinear" in ops["qdq"] and "QLinearConv" not in ops["qdq"]
    assert not any("Quant" in op for op in ops["fp32"])
    for model in section["models"].values():
        bare = model["bare_seconds_per_image"]
        assert bare == min(model["bare_runs"]) > 0
        assert model["ratio"] == pytest.approx(max(model["harness_loop_images_per_s"]) * bare)
        assert model["end_to_end_ratio"] == pytest.approx(2 / min(model["harness_seconds"]) * bare)
        assert model["preprocess_cpu_ms"] > 0
        assert model["limit"] == pytest.approx(bare / (bare + model["preprocess_cpu_ms"] / 1000 / section["cores"]))
        assert model["share_of_limit"] == pytest.approx(model["ratio"] / model["limit"])
        assert model["pass_limit"] == (model["share_of_limit"] >= harness.INT8_LIMIT_SHARE_TARGET)
        assert 0 <= model["idle_share"] <= 1
        assert model["threads"]["intra_op"] == 0 and model["pipeline"]["workers_used"] >= 1
    fp32 = section["models"]["fp32"]
    assert fp32["speedup_bare"] == pytest.approx(1.0) and fp32["speedup_harness"] == pytest.approx(1.0)
    int8 = section["models"]["int8"]
    assert int8["speedup_bare"] == pytest.approx(fp32["bare_seconds_per_image"] / int8["bare_seconds_per_image"])
    assert section["pass_int8"] == (int8["ratio"] >= harness.INT8_BARE_TARGET)
    out = capsys.readouterr().out
    assert "(d) int8 through the harness" in out and "share of limit" in out and "spinning" in out
    assert all(f"\n{name} " in out for name in ("fp32", "int8", "qdq"))


def test_int8_section_applies_a_lever_to_the_harness_and_the_bare_session(tmp_path, monkeypatch):
    from ssd_eval.inference import runner

    made = []
    real = runner.create_session

    def recording(path, runtime, *args, **kwargs):
        made.append(runtime.allow_spinning)
        return real(path, runtime, *args, **kwargs)

    monkeypatch.setattr(runner, "create_session", recording)
    section = harness.bench_int8(tmp_path / "int8", images=2, repeats=1, spec=TINY, formats=("int8",),
                               overrides=[("runtime.allow_spinning", True)])
    assert made and all(value is True for value in made)  # the bare session and every evaluation
    assert section["overrides"] == [["runtime.allow_spinning", True]]
    assert section["models"]["int8"]["threads"]["spinning"] == {key: "1" for key in runner.SPINNING_KEYS}


def test_bench_harness_runs_only_the_sections_asked_for(tmp_path, monkeypatch, capsys):
    ran = []
    for name in ("bench_throughput", "bench_memory", "bench_scoring"):
        monkeypatch.setattr(harness, name, lambda *a, _name=name, **k: ran.append(_name))
    monkeypatch.setattr(harness, "bench_int8", lambda *a, **k: ran.append(("int8", k["images"], k["overrides"])) or {
        "models": {"fp32": {"ratio": 0.9, "share_of_limit": 0.99, "limit": 0.91}}, "unreliable": None})
    report = harness.bench_harness(quick=True, work_dir=tmp_path, results_path=None, only=["int8"], int8_images=4,
                                 overrides=[("runtime.allow_spinning", False)])
    assert ran == [("int8", 4, [("runtime.allow_spinning", False)])]
    assert set(report["section_seconds"]) == {"int8"}
    assert "int8 section harness/bare fp32 0.900 (0.990 of the limit 0.910)" in capsys.readouterr().out
    with pytest.raises(UserError, match="no section 'gpu'"):
        harness.bench_harness(quick=True, work_dir=tmp_path, results_path=None, only=["gpu"])


def test_int8_section_runs_levers_side_by_side_with_the_default(tmp_path, capsys):
    section = harness.bench_int8(tmp_path / "int8", images=2, repeats=1, spec=TINY, formats=("fp32", "int8"),
                               levers=[("spin", [("runtime.allow_spinning", True)])])
    assert list(section["models"]) == ["fp32", "int8", "fp32 spin", "int8 spin"]
    spun, default = section["models"]["int8 spin"], section["models"]["int8"]
    assert spun["format"] == "int8" and spun["lever"] == "spin" and default["lever"] == ""
    assert spun["threads"]["spinning"]["session.intra_op.allow_spinning"] == "1"
    assert default["threads"]["spinning"] == "onnxruntime default (on)"
    assert spun["ratio_vs_default_bare"] == pytest.approx(
        max(spun["harness_loop_images_per_s"]) * default["bare_seconds_per_image"])
    assert "lever spin: runtime.allow_spinning=True" in capsys.readouterr().out
    with pytest.raises(UserError, match="no model 'int4'"):
        harness.bench_int8(tmp_path / "bad", images=2, repeats=1, spec=TINY, formats=("int4",))


def test_preprocess_section_times_each_step_and_route_on_real_images(coco_subset, capsys):
    section = harness.bench_int8_preprocess(coco_subset / "annotations.json", coco_subset / "images", images=3,
                                          repeats=1, size_hw=(120, 160))
    assert section["images"] == 3 and section["routes"][0] == "opencv-lut"
    assert set(section["protocols"]) == {"coco", "inc", "mlperf-ssd"}
    assert section["protocols"]["inc"]["backend"] == "opencv" and section["protocols"]["coco"]["backend"] == "pil"
    for protocol in section["protocols"].values():
        assert protocol["identical"]
        ms = protocol["ms"]
        assert all(value >= 0 for value in ms.values())
        for route in section["routes"]:
            assert protocol["total_ms"][route] == pytest.approx(ms["decode"] + ms["resize"] + ms[route])
    assert "same bits: yes" in capsys.readouterr().out


def test_preprocess_data_must_hold_annotations_and_images(tmp_path):
    with pytest.raises(UserError, match="expected annotations.json and images/"):
        harness.bench_harness(quick=True, work_dir=tmp_path, results_path=None, only=["preprocess"],
                            preprocess_data=tmp_path)
