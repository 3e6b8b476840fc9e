"""Tests for ssd_eval.inference.runner: provider fallback, I/O found by name, shape checks, batched runs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from ssd_eval.config.schema import ModelConfig, RuntimeConfig
from ssd_eval.errors import UserError
from ssd_eval.inference.runner import Detector, choose_providers, resolve_io

from helpers import fixed_detector

HW = (32, 48)
BOXES = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 1.0], [0.0, 0.0, 1.0, 1.0]]
LABELS = [1, 4, 80]
SCORES = [0.9, 0.6, 0.3]


def make_detector(path: Path, *, model: ModelConfig | None = None, runtime: RuntimeConfig | None = None,
                  input_size=HW) -> Detector:
    return Detector(path, model or ModelConfig(), runtime or RuntimeConfig(), input_size)


def batch(count=1, hw=HW) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((count, 3, *hw)).astype(np.float32)


@pytest.fixture
def model_path(tmp_path) -> Path:
    return fixed_detector(tmp_path / "m.onnx", BOXES, LABELS, SCORES, input_hw=HW)


def edit_model(src: Path, dst: Path, change) -> Path:
    model = onnx.load(str(src))
    change(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


def batched_detector(path: Path, *, label_type=TensorProto.INT64, labels=LABELS) -> Path:
    """Like helpers.fixed_detector, but with a symbolic batch dimension and batched outputs."""
    count = len(SCORES)
    np_label = np.float32 if label_type == TensorProto.FLOAT else np.int64
    init = [
        numpy_helper.from_array(np.asarray(BOXES, dtype=np.float32).reshape(1, count, 4), "const_boxes"),
        numpy_helper.from_array(np.asarray(labels, dtype=np_label).reshape(1, count), "const_labels"),
        numpy_helper.from_array(np.asarray(SCORES, dtype=np.float32).reshape(1, count), "const_scores"),
        numpy_helper.from_array(np.zeros((1, 1), dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3], keepdims=0),  # (N, 3)
        helper.make_node("ReduceMean", ["mean"], ["mean1"], axes=[1], keepdims=1),  # (N, 1)
        helper.make_node("Mul", ["mean1", "zero"], ["nothing"]),  # (N, 1) zeros
        helper.make_node("Add", ["const_scores", "nothing"], ["scores"]),  # (N, count)
        helper.make_node("Unsqueeze", ["nothing"], ["nothing3"], axes=[2]),  # (N, 1, 1)
        helper.make_node("Add", ["const_boxes", "nothing3"], ["bboxes"]),  # (N, count, 4)
        helper.make_node("Cast", ["nothing"], ["nothing_l"], to=label_type),
        helper.make_node("Add", ["const_labels", "nothing_l"], ["labels"]),  # (N, count)
    ]
    graph = helper.make_graph(
        nodes, "batched_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *HW])],
        [helper.make_tensor_value_info("bboxes", TensorProto.FLOAT, ["N", count, 4]),
         helper.make_tensor_value_info("labels", label_type, ["N", count]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", count])],
        init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def assert_fixed_output(dets) -> None:
    np.testing.assert_allclose(dets.boxes, BOXES, rtol=1e-6)
    assert dets.labels.dtype == np.int64
    assert dets.labels.tolist() == LABELS
    np.testing.assert_allclose(dets.scores, SCORES, rtol=1e-6)
    assert dets.boxes.shape == (3, 4)


# ---------------------------------------------------------------- providers


def test_choose_providers_keeps_available_in_requested_order():
    assert choose_providers(["B", "A"], ["A", "B", "C"]) == ["B", "A"]


def test_choose_providers_skips_missing_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        chosen = choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text


def test_choose_providers_falls_back_to_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        chosen = choose_providers(["CUDAExecutionProvider"], ["CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider is not available" in caplog.text
    assert "falling back to CPUExecutionProvider" in caplog.text


def test_detector_falls_back_when_provider_missing(model_path, caplog):
    runtime = RuntimeConfig(providers=["NoSuchExecutionProvider"])
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        detector = make_detector(model_path, runtime=runtime)
    assert detector.providers == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider" in caplog.text


# ---------------------------------------------------------------- running


def test_detector_returns_fixed_boxes(model_path):
    detector = make_detector(model_path)
    assert detector.providers == ["CPUExecutionProvider"]
    [dets] = detector.run(batch())
    assert_fixed_output(dets)


def test_detector_io(model_path):
    io = make_detector(model_path).io
    assert (io.input_name, io.boxes, io.labels, io.scores) == ("image", "bboxes", "labels", "scores")
    assert io.input_shape == (1, 3, *HW)
    assert io.dynamic_batch is False


def test_outputs_found_by_name_whatever_their_order(model_path, tmp_path):
    def reverse_outputs(model):
        outputs = list(model.graph.output)
        del model.graph.output[:]
        model.graph.output.extend([outputs[2], outputs[1], outputs[0]])  # scores, labels, bboxes

    path = edit_model(model_path, tmp_path / "reordered.onnx", reverse_outputs)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["scores", "labels", "bboxes"]
    [dets] = make_detector(path).run(batch())
    assert_fixed_output(dets)


def test_alternative_output_names(tmp_path):
    path = fixed_detector(tmp_path / "alt.onnx", BOXES, LABELS, SCORES, input_hw=HW,
                          output_names=("detection_bboxes", "detection_classes", "detection_scores"))
    detector = make_detector(path)
    assert (detector.io.boxes, detector.io.labels, detector.io.scores) == (
        "detection_bboxes", "detection_classes", "detection_scores")
    assert_fixed_output(detector.run(batch())[0])


def test_configured_output_names(tmp_path):
    path = fixed_detector(tmp_path / "custom.onnx", BOXES, LABELS, SCORES, input_hw=HW,
                          output_names=("out_b", "out_l", "out_s"))
    model = ModelConfig(boxes_output=["out_b"], labels_output=["out_l"], scores_output=["out_s"])
    assert_fixed_output(make_detector(path, model=model).run(batch())[0])


def test_wrong_output_names_list_actual_outputs(tmp_path):
    path = fixed_detector(tmp_path / "odd.onnx", BOXES, LABELS, SCORES, input_hw=HW,
                          output_names=("out_b", "out_l", "out_s"))
    with pytest.raises(UserError) as info:
        make_detector(path)
    message = str(info.value)
    assert str(path) in message
    assert "['out_b', 'out_l', 'out_s']" in message
    assert "model.boxes_output" in message


def add_second_input(model):
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1]))


def test_two_inputs_without_input_name(model_path, tmp_path):
    path = edit_model(model_path, tmp_path / "two.onnx", add_second_input)
    with pytest.raises(UserError) as info:
        make_detector(path)
    assert "model.input_name" in str(info.value)
    assert "'image'" in str(info.value) and "'extra'" in str(info.value)


def test_two_inputs_with_input_name(model_path, tmp_path):
    path = edit_model(model_path, tmp_path / "two.onnx", add_second_input)
    detector = make_detector(path, model=ModelConfig(input_name="image"))
    assert detector.io.input_name == "image"


def test_unknown_input_name(model_path):
    with pytest.raises(UserError) as info:
        make_detector(model_path, model=ModelConfig(input_name="images"))
    assert "'images'" in str(info.value)
    assert "['image']" in str(info.value)


def test_input_size_mismatch(model_path):
    with pytest.raises(UserError) as info:
        make_detector(model_path, input_size=[1200, 1200])
    message = str(info.value)
    assert str(model_path) in message
    assert "preprocess.input_size" in message
    assert "(3, 32, 48)" in message
    assert "(1200, 1200)" in message


def test_swapped_input_size_is_a_mismatch(model_path):
    with pytest.raises(UserError, match="preprocess.input_size"):
        make_detector(model_path, input_size=[48, 32])


def test_batch_size_two_on_fixed_batch_model(model_path):
    with pytest.raises(UserError) as info:
        make_detector(model_path, runtime=RuntimeConfig(batch_size=2))
    message = str(info.value)
    assert "batch dimension is fixed at 1" in message
    assert "runtime.batch_size" in message


def test_dynamic_batch_model_runs_batches(tmp_path):
    path = batched_detector(tmp_path / "dyn.onnx")
    detector = make_detector(path, runtime=RuntimeConfig(batch_size=2))
    assert detector.io.dynamic_batch is True
    assert detector.io.input_shape == (None, 3, *HW)
    out = detector.run(batch(2))
    assert len(out) == 2
    for dets in out:
        assert_fixed_output(dets)


def test_float_labels_are_converted_to_int(tmp_path):
    path = batched_detector(tmp_path / "flabels.onnx", label_type=TensorProto.FLOAT)
    [dets] = make_detector(path).run(batch())
    assert dets.labels.dtype == np.int64
    assert dets.labels.tolist() == LABELS


def test_non_integer_float_labels_are_user_error(tmp_path):
    path = batched_detector(tmp_path / "fraction.onnx", label_type=TensorProto.FLOAT, labels=[1.0, 2.5, 3.0])
    with pytest.raises(UserError, match="non-integer labels"):
        make_detector(path).run(batch())


def test_not_onnx_file_is_user_error(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(UserError) as info:
        make_detector(path)
    assert str(path) in str(info.value)
    assert "cannot load" in str(info.value)


def test_missing_model_file_is_user_error(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(UserError, match=str(path)):
        make_detector(path)


def test_optimized_model_cache_is_written_then_loaded(model_path, tmp_path):
    cache = tmp_path / "cache"
    runtime = RuntimeConfig(optimized_model_cache=str(cache))
    sha = "ab" * 32
    first = Detector(model_path, ModelConfig(), runtime, HW, sha)
    [written] = cache.glob(f"{sha[:16]}-all-*.onnx")
    assert written.stat().st_size > 0 and written.with_suffix(".json").is_file()
    stamp = written.stat().st_mtime_ns
    second = Detector(model_path, ModelConfig(), runtime, HW, sha)
    assert written.stat().st_mtime_ns == stamp  # loaded, not rewritten
    inputs = batch()
    assert np.array_equal(first.run(inputs)[0].boxes, second.run(inputs)[0].boxes)


def test_optimized_model_cache_under_a_file_is_a_user_error(model_path, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="optimized_model_cache"):
        Detector(model_path, ModelConfig(), RuntimeConfig(optimized_model_cache=str(blocker / "c")), HW, "ab" * 32)


def test_non_float_input_is_a_user_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["f"], ["bboxes"], keepdims=1)],
        "half", [helper.make_tensor_value_info("image", TensorProto.FLOAT16, [1, 3, *HW])],
        [helper.make_tensor_value_info("bboxes", TensorProto.FLOAT, None)])
    path = tmp_path / "half.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7), str(path))
    with pytest.raises(UserError, match=r"tensor\(float16\)"):
        make_detector(path)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_graph_optimization_levels(model_path, level):
    detector = make_detector(model_path, runtime=RuntimeConfig(graph_optimization=level, intra_op_threads=1))
    assert_fixed_output(detector.run(batch())[0])


def test_resolve_io_on_session(model_path):
    detector = make_detector(model_path)
    io = resolve_io(detector.session, ModelConfig(input_name="image"), model_path)
    assert io == detector.io


def test_model_with_no_detections(tmp_path):
    path = fixed_detector(tmp_path / "empty.onnx", np.zeros((0, 4)), [], [], input_hw=HW)
    [dets] = make_detector(path).run(batch())
    assert dets.boxes.shape == (0, 4)
    assert dets.labels.shape == (0,)
    assert dets.scores.shape == (0,)


# ---------------------------------------------------------------- output checks, threads, optimized-model cache

def constant_detector(path: Path, boxes, labels, scores) -> Path:
    """A model that returns exactly these arrays (any shape, NaN allowed) whatever the image."""
    arrays = {"bboxes": np.asarray(boxes, dtype=np.float32), "labels": np.asarray(labels, dtype=np.int64),
              "scores": np.asarray(scores, dtype=np.float32)}
    types = {"bboxes": TensorProto.FLOAT, "labels": TensorProto.INT64, "scores": TensorProto.FLOAT}
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"const_{name}"], [name]) for name in arrays], "constant",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, *HW])],
        [helper.make_tensor_value_info(name, types[name], list(array.shape)) for name, array in arrays.items()],
        [numpy_helper.from_array(array, f"const_{name}") for name, array in arrays.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7), str(path))
    return path


@pytest.mark.parametrize("boxes, labels, scores, match", [
    (np.zeros((1, 4, 3)), [LABELS], [SCORES], r"'bboxes' has shape \(1, 4, 3\); expected \(1, N, 4\)"),
    (np.zeros((1, 3, 5)), [LABELS], [SCORES], r"'bboxes' has shape \(1, 3, 5\); expected \(1, N, 4\)"),
    (np.zeros((3, 4)), [LABELS], [SCORES], r"'bboxes' has shape \(3, 4\); expected \(1, N, 4\)"),
    ([BOXES], [[[v] for v in LABELS]], [SCORES], r"'labels' has shape \(1, 3, 1\); expected \(1, N\)"),
    ([BOXES], [LABELS], SCORES, r"'scores' has shape \(3,\); expected \(1, N\)"),
    ([[[np.nan] * 4] * 3], [LABELS], [SCORES], r"'bboxes' holds NaN or Inf \(image 1 of a batch of 1\)"),
    ([BOXES], [LABELS], [[0.5, np.inf, 0.1]], r"'scores' holds NaN or Inf"),
], ids=["transposed", "five-values", "rank-2", "labels-rank-3", "scores-rank-1", "nan-boxes", "inf-scores"])
def test_malformed_model_outputs_are_one_line_errors(tmp_path, boxes, labels, scores, match):
    """Item 2: ranks, the last dimension and finiteness are checked; nothing is silently reshaped."""
    path = constant_detector(tmp_path / "odd.onnx", boxes, labels, scores)
    with pytest.raises(UserError, match=match) as info:
        make_detector(path).run(batch())
    assert str(info.value).startswith(f"{path}: output ")


@pytest.mark.parametrize("key", ["intra_op_threads", "inter_op_threads"])
@pytest.mark.parametrize("value", [100_000, -1])
def test_absurd_thread_counts_are_refused(model_path, key, value):
    """Item 14: runtime.intra_op_threads=100000 used to hang in onnxruntime."""
    with pytest.raises(UserError, match=rf"runtime.{key}: {value} must be between 0 .* CPU cores"):
        make_detector(model_path, runtime=RuntimeConfig(**{key: value}))


def test_replaced_optimized_model_is_not_trusted(model_path, tmp_path, caplog):
    """Item 3 (c): the cached file is checked against its sidecar, not trusted by name."""
    cache = tmp_path / "cache"
    runtime = RuntimeConfig(optimized_model_cache=str(cache))
    Detector(model_path, ModelConfig(), runtime, HW, "ab" * 32)
    [cached] = cache.glob("*.onnx")
    other = fixed_detector(tmp_path / "other.onnx", [[0.0, 0.0, 0.5, 0.5]], [7], [0.2], input_hw=HW)
    cached.write_bytes(other.read_bytes())
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        detector = Detector(model_path, ModelConfig(), runtime, HW, "ab" * 32)
    assert "optimizing the model again" in caplog.text
    assert_fixed_output(detector.run(batch())[0])  # the real model's output, not the replacement's
    assert list(cache.glob("*.onnx")) == [cached]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        assert_fixed_output(Detector(model_path, ModelConfig(), runtime, HW, "ab" * 32).run(batch())[0])
    assert caplog.text == ""  # rebuilt and recorded: trusted again


def test_optimized_model_is_keyed_by_model_version_level_and_providers(monkeypatch):
    from ssd_eval.inference import runner

    runtime = RuntimeConfig(optimized_model_cache="c")
    base, key = runner.optimized_model_entry("ab" * 32, runtime, ["CPUExecutionProvider"])
    assert key["source_sha256"] == "ab" * 32 and key["onnxruntime"] == runner.ort.__version__
    others = {
        runner.optimized_model_entry("cd" * 32, runtime, ["CPUExecutionProvider"])[0],
        runner.optimized_model_entry("ab" * 32, RuntimeConfig(optimized_model_cache="c", graph_optimization="basic"),
                                     ["CPUExecutionProvider"])[0],
        runner.optimized_model_entry("ab" * 32, runtime, ["CUDAExecutionProvider", "CPUExecutionProvider"])[0],
    }
    monkeypatch.setattr(runner.ort, "__version__", "0.0.1")
    others.add(runner.optimized_model_entry("ab" * 32, runtime, ["CPUExecutionProvider"])[0])
    assert len(others) == 4 and base not in others


# ---------------------------------------------------------------- issue 15: gaps found by mutation testing

def outputs_model(path: Path, outputs: dict, *, input_batch=1) -> Path:
    """A model returning exactly ``outputs`` (name -> numpy array, any dtype) for a (input_batch, 3, H, W) image."""
    types = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
             np.dtype(np.int64): TensorProto.INT64}
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"const_{name}"], [name]) for name in outputs], "outputs",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [input_batch, 3, *HW])],
        [helper.make_tensor_value_info(name, types[a.dtype], list(a.shape)) for name, a in outputs.items()],
        [numpy_helper.from_array(a, f"const_{name}") for name, a in outputs.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7), str(path))
    return path


def three_outputs(boxes, labels, scores, float_type=np.float32) -> dict:
    return {"bboxes": np.asarray(boxes, dtype=float_type), "labels": np.asarray(labels, dtype=np.int64),
            "scores": np.asarray(scores, dtype=float_type)}


def test_choose_providers_warnings_name_the_missing_and_the_available(caplog):
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        assert choose_providers(["XExecutionProvider"], ["AExecutionProvider", "BExecutionProvider"]) == [
            "CPUExecutionProvider"]
    assert caplog.messages == [
        "execution provider XExecutionProvider is not available here (available: AExecutionProvider, "
        "BExecutionProvider); skipping it",
        "none of the requested providers is available; falling back to CPUExecutionProvider"]


def test_the_chosen_providers_are_the_ones_given_to_onnxruntime(model_path, monkeypatch):
    from ssd_eval.inference import runner

    given = []
    real = runner.ort.InferenceSession

    def recording(*args, **kwargs):
        given.append(kwargs.get("providers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner.ort, "InferenceSession", recording)
    make_detector(model_path, runtime=RuntimeConfig(providers=["NoSuchExecutionProvider", "CPUExecutionProvider"]))
    assert given == [["CPUExecutionProvider"]]


def test_thread_limit_is_four_per_core_inclusive(monkeypatch):
    from ssd_eval.inference import runner

    monkeypatch.setattr(runner.os, "cpu_count", lambda: 3)
    runner.check_threads(RuntimeConfig(intra_op_threads=12, inter_op_threads=0))  # 4 x 3: accepted
    with pytest.raises(UserError) as info:
        runner.check_threads(RuntimeConfig(inter_op_threads=13))
    assert str(info.value) == ("runtime.inter_op_threads: 13 must be between 0 (onnxruntime's default) and 12 "
                               "(4 x the 3 CPU cores here)")
    monkeypatch.setattr(runner.os, "cpu_count", lambda: None)  # unknown: counted as one core
    runner.check_threads(RuntimeConfig(intra_op_threads=4))
    with pytest.raises(UserError, match=r"between 0 \(onnxruntime's default\) and 4 \(4 x the 1 CPU cores here\)"):
        runner.check_threads(RuntimeConfig(intra_op_threads=5))


def test_session_config_entries_reach_the_session(model_path):
    """From runtime.session_config, or the session_config argument (which replaces it), never neither."""
    runtime = RuntimeConfig(session_config={"session.intra_op.allow_spinning": "0"})
    options = make_detector(model_path, runtime=runtime).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.log_severity_level == 3  # onnxruntime's errors only
    given = Detector(model_path, ModelConfig(), runtime, HW, session_config={"session.inter_op.allow_spinning": "0"})
    options = given.session.get_session_options()
    assert given.session_config == {"session.inter_op.allow_spinning": "0"}
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry("session.intra_op.allow_spinning")


def test_a_session_config_entry_onnxruntime_refuses_is_one_line(model_path):
    with pytest.raises(UserError) as info:
        make_detector(model_path, runtime=RuntimeConfig(session_config={"": "1"}))
    assert str(info.value) == ("runtime.session_config: onnxruntime refuses ='1': "
                               "Config key is empty or longer than maximum length 1024")


@pytest.mark.parametrize("message, shown", [("first line\nsecond line", "first line"), ("", "RuntimeError")])
def test_a_model_onnxruntime_cannot_load_is_one_line(model_path, monkeypatch, message, shown):
    from ssd_eval.inference import runner

    def refuse(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(runner.ort, "InferenceSession", refuse)
    with pytest.raises(UserError) as info:
        make_detector(model_path)
    assert str(info.value) == f"{model_path}: onnxruntime cannot load this model: {shown}"


@pytest.mark.parametrize("message, shown", [("  first line\nsecond line", "first line"), ("", "ValueError")])
def test_a_failed_inference_is_one_line(model_path, message, shown):
    import types

    def fail(*args):
        raise ValueError(message)

    detector = make_detector(model_path)
    detector.session = types.SimpleNamespace(run=fail)
    with pytest.raises(UserError) as info:
        detector.run(batch())
    assert str(info.value) == f"{model_path}: inference failed: {shown}"


def test_inference_seconds_add_up_over_runs(model_path, monkeypatch):
    import itertools
    import types

    from ssd_eval.inference import runner

    detector = make_detector(model_path)
    assert detector.inference_seconds == 0.0
    ticks = itertools.count(100.0, 1.5)  # each perf_counter call 1.5 s later: every run takes 1.5 s
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    detector.run(batch())
    detector.run(batch())
    assert detector.inference_seconds == 3.0


@pytest.mark.parametrize("output, match", [
    ("labels", r": none of the outputs \['bboxes', 'out_l', 'scores'\] is named like \[.*'labels'.*\] "
               r"\(model\.labels_output\); set model\.labels_output to the right output name$"),
    ("scores", r": none of the outputs \['bboxes', 'labels', 'out_s'\] is named like \[.*'scores'.*\] "
               r"\(model\.scores_output\); set model\.scores_output to the right output name$"),
    ("boxes", r": none of the outputs \['out_b', 'labels', 'scores'\] is named like \[.*'bboxes'.*\] "
              r"\(model\.boxes_output\); set model\.boxes_output to the right output name$"),
])
def test_a_missing_output_names_its_config_key(tmp_path, output, match):
    names = {"boxes": "bboxes", "labels": "labels", "scores": "scores"}
    names[output] = {"boxes": "out_b", "labels": "out_l", "scores": "out_s"}[output]
    path = fixed_detector(tmp_path / "m.onnx", BOXES, LABELS, SCORES, input_hw=HW,
                          output_names=(names["boxes"], names["labels"], names["scores"]))
    with pytest.raises(UserError, match=match):
        make_detector(path)


def test_an_input_that_is_not_4d_is_one_line(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["bboxes"], keepdims=1)], "flat",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, *HW])],
        [helper.make_tensor_value_info("bboxes", TensorProto.FLOAT, None)])
    path = tmp_path / "flat.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7), str(path))
    with pytest.raises(UserError) as info:
        make_detector(path)
    assert str(info.value) == (f"{path}: input 'image' has shape [3, 32, 48]; expected (batch, 3, height, width)")


def test_output_shape_errors_spell_out_the_expected_layout(tmp_path):
    path = outputs_model(tmp_path / "odd.onnx", three_outputs(np.zeros((1, 4, 3)), [LABELS], [SCORES]))
    with pytest.raises(UserError) as info:
        make_detector(path).run(batch())
    assert str(info.value) == (f"{path}: output 'bboxes' has shape (1, 4, 3); expected (1, N, 4) "
                               "(batch, detections, x1 y1 x2 y2)")
    path = outputs_model(tmp_path / "flat.onnx", three_outputs([BOXES], [LABELS], SCORES))
    with pytest.raises(UserError) as info:
        make_detector(path).run(batch())
    assert str(info.value) == f"{path}: output 'scores' has shape (3,); expected (1, N) (batch, detections)"


def test_outputs_disagreeing_on_the_detection_count_are_one_line(tmp_path):
    path = outputs_model(tmp_path / "odd.onnx", three_outputs([BOXES], [LABELS[:2]], [SCORES]))
    with pytest.raises(UserError) as info:
        make_detector(path).run(batch())
    assert str(info.value) == (f"{path}: outputs disagree on the number of detections: boxes (1, 3, 4), "
                               "labels (1, 2), scores (1, 3)")


@pytest.mark.parametrize("name", ["bboxes", "scores"])
def test_a_non_finite_output_names_the_image_of_the_batch(tmp_path, name):
    """Two images, one detection each, the second image's value NaN: image 2 of 2, not image 1."""
    arrays = three_outputs([[[0.1, 0.1, 0.2, 0.2]], [[0.1, 0.1, 0.2, 0.2]]], [[1], [2]], [[0.5], [0.5]])
    arrays[name][1] = np.nan
    path = outputs_model(tmp_path / "nan.onnx", arrays, input_batch=2)
    with pytest.raises(UserError, match=rf"output '{name}' holds NaN or Inf \(image 2 of a batch of 2\)"):
        make_detector(path).run(batch(2))


def test_double_outputs_are_returned_as_float32(tmp_path):
    path = outputs_model(tmp_path / "double.onnx", three_outputs([BOXES], [LABELS], [SCORES], np.float64))
    [dets] = make_detector(path).run(batch())
    assert dets.boxes.dtype == np.float32 and dets.scores.dtype == np.float32
    assert_fixed_output(dets)


def test_optimized_model_sidecar_records_what_it_was_made_from(model_path, tmp_path, caplog):
    import platform

    from ssd_eval.utils import sha256_of

    cache = tmp_path / "two" / "levels"  # created with its parents
    runtime = RuntimeConfig(optimized_model_cache=str(cache), session_config={"session.intra_op.allow_spinning": "0"})
    Detector(model_path, ModelConfig(), runtime, HW, "ab" * 32)
    [cached] = cache.glob("*.onnx")
    assert re.fullmatch(r"abababababababab-all-[0-9a-f]{12}\.onnx", cached.name)
    assert json.loads(cached.with_suffix(".json").read_text()) == {
        "source_sha256": "ab" * 32, "onnxruntime": onnxruntime.__version__, "graph_optimization": "all",
        "providers": ["CPUExecutionProvider"], "machine": platform.machine(),
        "session_config": {"session.intra_op.allow_spinning": "0"}, "optimized_sha256": sha256_of(cached)}
    with caplog.at_level(logging.INFO, logger="ssd_eval.inference.runner"):
        Detector(model_path, ModelConfig(), runtime, HW, "ab" * 32)
    assert caplog.messages == [f"using the optimized model {cached}", "session providers: ['CPUExecutionProvider']"]


def test_an_optimized_model_made_with_other_session_config_is_made_again(model_path, tmp_path, caplog):
    cache = tmp_path / "cache"
    Detector(model_path, ModelConfig(), RuntimeConfig(optimized_model_cache=str(cache)), HW, "ab" * 32)
    [cached] = cache.glob("*.onnx")
    other = RuntimeConfig(optimized_model_cache=str(cache), session_config={"session.intra_op.allow_spinning": "0"})
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        Detector(model_path, ModelConfig(), other, HW, "ab" * 32)
    assert "optimizing the model again" in caplog.text


@pytest.mark.parametrize("sidecar", [None, "{not json", "[]"], ids=["missing", "not-json", "not-a-dict"])
def test_an_optimized_model_without_a_valid_sidecar_is_made_again(model_path, tmp_path, caplog, sidecar):
    cache = tmp_path / "cache"
    runtime = RuntimeConfig(optimized_model_cache=str(cache))
    Detector(model_path, ModelConfig(), runtime, HW, "ab" * 32)
    [cached] = cache.glob("*.onnx")
    record = cached.with_suffix(".json")
    record.unlink()
    if sidecar is not None:
        record.write_text(sidecar)
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        assert_fixed_output(Detector(model_path, ModelConfig(), runtime, HW, "ab" * 32).run(batch())[0])
    assert caplog.messages == [f"{cached}: does not match its record {record} (replaced, or made by another model "
                               "or onnxruntime); optimizing the model again"]
    assert json.loads(record.read_text())["source_sha256"] == "ab" * 32  # recorded again


def test_a_sidecar_that_cannot_be_written_is_a_warning(model_path, tmp_path, monkeypatch, caplog):
    from ssd_eval.inference import runner

    def refuse(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "atomic_write_json", refuse)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="ssd_eval.inference.runner"):
        detector = Detector(model_path, ModelConfig(), RuntimeConfig(optimized_model_cache=str(cache)), HW, "ab" * 32)
    [cached] = cache.glob("*.onnx")
    assert caplog.messages == [f"{cached}: not recorded, the optimized model will be made again next time "
                               "([Errno 28] No space left on device)"]
    assert_fixed_output(detector.run(batch())[0])


def test_an_optimized_model_cache_that_cannot_be_created_is_one_line(model_path, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError) as info:
        Detector(model_path, ModelConfig(), RuntimeConfig(optimized_model_cache=str(blocker / "c")), HW, "ab" * 32)
    assert str(info.value) == f"{blocker / 'c'}: cannot create runtime.optimized_model_cache: Not a directory"


def test_create_session_without_session_config_takes_the_runtimes(model_path):
    """ssd_eval.engine.bench calls create_session(path, runtime): runtime.session_config is the default."""
    from ssd_eval.inference.runner import create_session

    runtime = RuntimeConfig(session_config={"session.intra_op.allow_spinning": "0"})
    options = create_session(model_path, runtime).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
