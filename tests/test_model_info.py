"""``ssd-eval inspect``: quantization format, op counts, int8 weight ranges, the saturation verdict
for simulated CPUs and this one, GFLOPs, refusals, and the command line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ssd_eval.errors import UserError
from ssd_eval.inference.cpu import Int8Capability, detect_int8_capability
from ssd_eval.inference.model_info import inspect_model, render, saturation_warning

from conftest import ROOT, run_cli
from helpers import int8_conv_model

AVX2 = Int8Capability("AMD EPYC 7B12", "x86_64", ["avx2", "sse4_1"], "x86-avx2", True, "simulated")
SKYLAKE = Int8Capability("Xeon 8168", "x86_64", ["avx2", "avx512bw", "sse4_1"], "x86-avx512", True, "simulated")
VNNI = Int8Capability("Xeon 8280", "x86_64", ["avx2", "avx512_vnni", "avx512bw", "sse4_1"], "x86-vnni", False,
                      "simulated")
ARM = Int8Capability("Neoverse-V2", "aarch64", ["asimddp", "i8mm"], "arm64-i8mm", False, "simulated")
UNKNOWN = Int8Capability("Mystery", "x86_64", [], "unknown", None, "simulated")
SAMPLE_MODELS = sorted((ROOT / "data" / "sample" / "models").glob("*.onnx"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "full": int8_conv_model(root / "full.onnx", "qoperator"),
        "7bit": int8_conv_model(root / "7bit.onnx", "qoperator", weight_range=(-64, 63)),
        "qdq": int8_conv_model(root / "qdq.onnx", "qdq"),
        "qdq-7bit": int8_conv_model(root / "qdq7.onnx", "qdq", weight_range=(-64, 63)),
        "qdq-no-output-q": int8_conv_model(root / "qdq_noq.onnx", "qdq", output_q=False),
        "fp32": int8_conv_model(root / "fp32.onnx", "fp32"),
    }


@pytest.mark.parametrize("name, low, high, risk", [("full", -128, 127, True), ("7bit", -64, 63, False)])
def test_qoperator_weight_range_and_verdict(models, name, low, high, risk):
    info = inspect_model(models[name], AVX2)
    assert info.quantization_format == "QOperator"
    assert info.quantized_op_counts == {"QLinearConv": 1}
    [entry] = info.weight_ranges
    assert (entry.node, entry.op_type, entry.weight, entry.weight_dtype) == ("qconv", "QLinearConv", "w", "int8")
    assert (entry.min, entry.max, entry.activation_dtype, entry.u8s8) == (low, high, "uint8", True)
    assert entry.int8_kernel and not entry.needs_fusion
    assert entry.outside_safe_range is risk
    assert info.saturation_risk is risk
    # The verdict per simulated CPU: only x86 without VNNI can saturate, and only full-range weights.
    assert inspect_model(models[name], AVX2).can_saturate_here is risk
    assert inspect_model(models[name], SKYLAKE).can_saturate_here is risk
    assert inspect_model(models[name], VNNI).can_saturate_here is False
    assert inspect_model(models[name], ARM).can_saturate_here is False
    assert inspect_model(models[name], UNKNOWN).can_saturate_here is (None if risk else False)


def test_qdq_conv(models):
    info = inspect_model(models["qdq"], AVX2)
    assert info.quantization_format == "QDQ"
    assert info.quantized_op_counts == {"DequantizeLinear": 3, "QuantizeLinear": 2}
    [entry] = info.weight_ranges
    assert (entry.node, entry.op_type, entry.weight, entry.weight_dtype, entry.activation_dtype) == \
        ("conv", "Conv", "w", "int8", "uint8")
    assert (entry.min, entry.max, entry.u8s8, entry.int8_kernel, entry.needs_fusion) == (-128, 127, True, True, True)
    assert info.saturation_risk and info.can_saturate_here
    assert inspect_model(models["qdq"], VNNI).can_saturate_here is False
    seven = inspect_model(models["qdq-7bit"], AVX2)
    assert (seven.weight_ranges[0].min, seven.weight_ranges[0].max, seven.saturation_risk) == (-64, 63, False)
    assert any("fuses" in note for note in info.notes)


def test_qdq_conv_without_output_quantize_runs_in_float(models):
    """onnxruntime fuses DQ -> Conv into QLinearConv only with a QuantizeLinear after it."""
    info = inspect_model(models["qdq-no-output-q"], AVX2)
    assert info.quantization_format == "QDQ"
    [entry] = info.weight_ranges
    assert entry.outside_safe_range and not entry.int8_kernel
    assert info.saturation_risk is False and info.can_saturate_here is False


def test_fp32(models):
    info = inspect_model(models["fp32"], AVX2)
    assert (info.quantization_format, info.quantized_op_counts, info.weight_ranges) == ("none", {}, [])
    assert info.saturation_risk is False and info.can_saturate_here is False
    assert "no saturation risk on any CPU" in render(info)


def test_gflops_of_a_known_conv(tmp_path):
    path = int8_conv_model(tmp_path / "conv.onnx", "qoperator", input_hw=(32, 32), channels=(16, 32))
    info = inspect_model(path, VNNI)
    # Cout * Cin * kh * kw * Hout * Wout multiply-accumulates, two FLOPs each.
    assert info.gflops == pytest.approx(2 * 32 * 16 * 3 * 3 * 30 * 30 / 1e9)
    assert info.gflops_skipped_nodes == 0
    fp32 = inspect_model(int8_conv_model(tmp_path / "f.onnx", "fp32", input_hw=(32, 32), channels=(16, 32)), VNNI)
    assert fp32.gflops == pytest.approx(info.gflops)


def test_symbolic_batch_counts_as_one_and_unknown_shapes_are_counted(tmp_path, models):
    import onnx

    model = onnx.load(str(models["fp32"]))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(tmp_path / "batch.onnx"))
    info = inspect_model(tmp_path / "batch.onnx", VNNI)
    assert info.inputs[0].shape == ["N", 3, 64, 64]
    assert (info.inputs[0].name, info.inputs[0].type, info.outputs[0].name) == ("x", "float", "y")
    assert info.gflops == pytest.approx(2 * 8 * 3 * 9 * 62 * 62 / 1e9)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    model.graph.output[0].type.tensor_type.ClearField("shape")
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    info = inspect_model(tmp_path / "dynamic.onnx", VNNI)
    assert info.inputs[0].shape == ["N", 3, "H", "W"]
    assert (info.gflops, info.gflops_skipped_nodes) == (0, 1)
    assert "not counted" in render(info)


def test_saturation_warning(models):
    full = inspect_model(models["full"], AVX2)
    warning = saturation_warning(full)
    assert warning is not None and "\n" not in warning
    assert "full.onnx" in warning and "x86-avx2" in warning and "session.x64quantprecision" in warning
    assert saturation_warning(full, {"session.x64quantprecision": "1"}) is None
    assert saturation_warning(full, {"session.x64quantprecision": "1"}, graph_optimization="disable") is not None
    assert saturation_warning(inspect_model(models["full"], VNNI)) is None
    assert saturation_warning(inspect_model(models["7bit"], AVX2)) is None
    qdq = inspect_model(models["qdq"], AVX2)
    assert saturation_warning(qdq) is not None
    assert saturation_warning(qdq, graph_optimization="basic") is None  # no fusion: float Conv


def test_render(models):
    text = render(inspect_model(models["full"], AVX2))
    assert "quantization  QOperator" in text and "[-128, 127]" in text and "qconv" in text
    assert "verdict: int8 weights leave [-64, 63] on 1 of 1 u8s8 ops: on this CPU (x86-avx2, no VNNI)" in text
    assert "session.x64quantprecision" in text
    assert "exact, no saturation risk on this CPU" in render(inspect_model(models["full"], VNNI))
    assert "cannot tell" in render(inspect_model(models["full"], UNKNOWN))
    assert "no saturation risk on this CPU (nor any other)" in render(inspect_model(models["7bit"], AVX2))


def test_render_cuts_long_weight_tables(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"), numpy_helper.from_array(np.array(0, np.int8), "wz")]
    nodes, current = [], "x"
    for index in range(25):
        weight = np.full((4, 4, 1, 1), 10, np.int8)
        weight[0, 0, 0, 0] = -128 if index % 2 else 10
        init.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(helper.make_node("QLinearConv", [current, "s", "z", f"w{index}", "s", "wz", "s", "z"],
                                      [f"y{index}"], name=f"conv{index}"))
        current = f"y{index}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info(current, TensorProto.UINT8, [1, 4, 8, 8])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "chain.onnx"))
    info = inspect_model(tmp_path / "chain.onnx", AVX2)
    assert len(info.weight_ranges) == 25 and len(info.risky_ops) == 12
    text = render(info)
    assert "conv19" in text and "conv20" not in text
    assert "... 5 more (2 outside [-64, 63])" in text
    assert "on 12 of 25 u8s8 ops" in text


def test_external_weights(tmp_path, models):
    import onnx

    model = onnx.load(str(models["full"]))
    onnx.save(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    info = inspect_model(tmp_path / "ext.onnx", AVX2)
    assert (info.weight_ranges[0].min, info.weight_ranges[0].max, info.saturation_risk) == (-128, 127, True)
    (tmp_path / "ext.onnx.data").unlink()
    info = inspect_model(tmp_path / "ext.onnx", AVX2)
    assert info.weight_ranges[0].min is None and info.saturation_risk is False
    assert any("external weight data" in note for note in info.notes)


def test_to_dict_is_json(models):
    info = inspect_model(models["full"], AVX2)
    data = json.loads(json.dumps(info.to_dict()))
    assert data["sha256"] == hashlib.sha256(models["full"].read_bytes()).hexdigest()
    assert data["size"] == models["full"].stat().st_size
    assert (data["opset"], data["ir_version"], data["quantization_format"]) == (13, 8, "QOperator")
    assert data["inputs"] == [{"name": "x", "type": "uint8", "shape": [1, 3, 64, 64]}]
    assert data["capability"]["kernel_class"] == "x86-avx2"
    assert data["weight_ranges"][0]["min"] == -128 and data["can_saturate_here"] is True


@pytest.mark.parametrize("path", SAMPLE_MODELS, ids=[p.stem for p in SAMPLE_MODELS])
def test_sample_models(path):
    info = inspect_model(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [t.name for t in info.inputs] == ["image"] and info.inputs[0].shape[1] == 3
    assert {t.name for t in info.outputs} == {"bboxes", "labels", "scores"}
    assert info.quantization_format in ("QOperator", "QDQ", "none")
    if path.stem in ("sample", "sample-offbyone"):
        assert (info.quantization_format, info.weight_ranges, info.saturation_risk) == ("none", [], False)
    json.dumps(info.to_dict())
    render(info)


@pytest.mark.parametrize("content", [b"not a model\n" * 10, b"", b"\x00\xff\x10garbage"],
                         ids=["text", "empty", "binary"])
def test_non_onnx_file_is_refused(tmp_path, content):
    path = tmp_path / "weights.onnx"
    path.write_bytes(content)
    with pytest.raises(UserError, match="weights.onnx") as caught:
        inspect_model(path)
    assert "\n" not in str(caught.value)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(UserError, match="nope.onnx: no such file"):
        inspect_model(tmp_path / "nope.onnx")
    with pytest.raises(UserError, match="not a file"):
        inspect_model(tmp_path)


def test_cli_json_and_text(models):
    done = run_cli("inspect", str(models["full"]), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {"path", "sha256", "size", "opset", "ir_version", "inputs", "outputs", "quantization_format",
            "quantized_op_counts", "weight_ranges", "saturation_risk", "can_saturate_here", "capability",
            "gflops", "gflops_skipped_nodes"} <= set(data)
    assert data["saturation_risk"] is True
    text = run_cli("inspect", "sample")  # a variant name: configs/sample.yaml's model
    assert text.returncode == 0, text.stderr
    assert "sample.onnx" in text.stdout and "verdict:" in text.stdout


def test_cli_missing_file(tmp_path):
    done = run_cli("inspect", str(tmp_path / "missing.onnx"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssd-eval: error:") and "missing.onnx" in lines[0]


def test_verdict_holds_on_this_cpu(models):
    """Ground truth: where this CPU's u8s8 path is exact (VNNI/AMX/ARM), onnxruntime on a full-range u8s8
    QLinearConv equals the ISA-independent onnx reference bit for bit."""
    capability = detect_int8_capability()
    if capability.u8s8_can_saturate is not False:
        pytest.skip(f"this CPU ({capability.kernel_class}) may saturate u8s8 sums; the exact verdict does not apply")
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    info = inspect_model(models["full"], capability)
    assert info.saturation_risk and info.can_saturate_here is False
    x = np.random.default_rng(1).integers(0, 256, size=(1, 3, 64, 64)).astype(np.uint8)
    x[0, :, :3, :3] = 255  # a maximal patch: the sums a saturating kernel would clip
    session = ort.InferenceSession(str(models["full"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    expected = ReferenceEvaluator(str(models["full"])).run(None, {"x": x})[0]
    assert got.dtype == expected.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_contrib_quantized_ops_are_counted(tmp_path):
    """onnxruntime's com.microsoft QLinear* ops make a QOperator model and are counted by domain."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("QLinearAveragePool", ["q", "s", "z", "s", "z"], ["p"], domain="com.microsoft",
                              kernel_shape=[2, 2]),
             helper.make_node("QLinearAdd", ["p", "s", "z", "p", "s", "z", "s", "z"], ["a"], domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["a", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "contrib", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "contrib.onnx"))
    info = inspect_model(tmp_path / "contrib.onnx", AVX2)
    assert info.quantization_format == "QOperator"
    assert info.quantized_op_counts == {"DequantizeLinear": 1, "QuantizeLinear": 1,
                                        "com.microsoft.QLinearAdd": 1, "com.microsoft.QLinearAveragePool": 1}
    assert (info.weight_ranges, info.saturation_risk, info.opset) == ([], False, 13)
    assert "no u8s8 int8 Conv/MatMul/Gemm kernels" in render(info)
