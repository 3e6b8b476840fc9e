"""Tests for ssd_eval.reports.tracking: a real MLflow file store read back with MLflow's own client, TensorBoard
event files read back record by record (and with tensorboard's own reader where it is installed)."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

import ssd_eval
from ssd_eval.cli import main
from ssd_eval.config.load import load_config
from ssd_eval.config.schema import TrackingConfig
from ssd_eval.errors import UserError
from ssd_eval.reports.tracking import check_trackers, log_mlflow, mlflow_uri, run_metrics, track
from ssd_eval.results.result import EvalResult, read_metrics_file

from conftest import run_cli
from helpers import metrics_document

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def sample_run(name: str, out: Path, *overrides):
    config = load_config(REPO / "configs" / f"{name}.yaml", [
        ("dataset.annotations", str(SAMPLE / "annotations.json")), ("dataset.images", str(SAMPLE / "images")),
        ("model.path", str(SAMPLE / "models" / f"{name}.onnx")), ("output.dir", str(out)),
        ("metrics.bootstrap.replicates", 0), *overrides])
    return ssd_eval.evaluate(config)  # the library entry point hands tracking to the run, as the CLI does


@pytest.fixture
def mlflow_client(monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch
    return lambda store: MlflowClient(tracking_uri=store.as_uri())


def test_mlflow_run_read_back_with_mlflows_client(tmp_path, mlflow_client):
    pytest.importorskip("matplotlib")
    results = tmp_path / "results"
    sample_run("sample", results / "sample")
    store = tmp_path / "mlruns"
    result = sample_run("sample-int8", results / "sample-int8", ("tracking.log", ["mlflow"]),
                        ("metrics.error_breakdown", True),
                        ("tracking.uri", str(store)), ("tracking.experiment", "quantization"))
    document = read_metrics_file(results / "sample-int8" / "metrics.json")

    client = mlflow_client(store)
    experiment = client.get_experiment_by_name("quantization")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = client.get_run(runs[0].info.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "sample-int8"
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    for stat in ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert metrics[stat] == pytest.approx(document[stat], abs=1e-12), stat
    assert metrics["AP/person"] == pytest.approx(document["per_category_ap"]["person"])
    assert "AP/airplane" not in metrics  # -1: no ground truth in the sample
    assert metrics["dAP/localization"] == pytest.approx(document["error_breakdown"]["dAP"]["localization"])
    assert params["config.model.path"] == str(SAMPLE / "models" / "sample-int8.onnx")
    assert params["protocol"] == "coco" and params["parent"] == "sample"
    assert tags["provenance.model.sha256"] == document["provenance"]["model"]["sha256"]
    assert json.loads(tags["provenance.runtime.providers"]) == ["CPUExecutionProvider"]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert sorted(artifacts) == ["metrics.json", "report"]
    pictures = sorted(a.path for a in client.list_artifacts(run.info.run_id, "report"))
    assert pictures == ["report/ap_delta_sample-int8.png", "report/errors_sample-int8.png",
                        "report/pr_iou50.png", "report/pr_iou75.png"]
    # where it went is recorded in metrics.json, and the report pictures were drawn elsewhere
    assert document["provenance"]["tracking"]["mlflow"]["run_id"] == run.info.run_id
    assert result.provenance["tracking"]["mlflow"]["uri"] == store.resolve().as_uri()
    assert not list(results.glob("*.png"))


def test_mlflow_limits_long_values_and_many_params(tmp_path, mlflow_client):
    document = metrics_document("ssd-12-int8", mAP=0.18, parent="ssd-12")
    document["provenance"]["config"] = {"runtime": {"session_config": {"long": "x" * 7000}},
                                        "many": {f"key{i}": i for i in range(250)}}
    document["provenance"]["host"]["cpu"] = "y" * 9000
    document["per_category_ap"] = {"traffic light": 0.2, "café (50%)": 0.1}
    document["_source"] = str(tmp_path / "ssd-12-int8" / "metrics.json")
    metrics_path = tmp_path / "metrics.json"
    metrics_path.write_text(json.dumps(document))
    record = log_mlflow(document, metrics_path, [], TrackingConfig(log=["mlflow"], uri=str(tmp_path / "store")))
    run = mlflow_client(tmp_path / "store").get_run(record["run_id"])
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert len(params["config.runtime.session_config.long"]) == 6000
    assert params["config.runtime.session_config.long"].endswith("...")
    assert len(tags["provenance.host.cpu"]) == 8000
    assert sum(1 for key in params if key.startswith("config.many.")) == 250  # more than one batch of 100
    # characters MLflow or TensorBoard refuse (a space: TensorBoard) replaced, the same in both (run_metrics)
    assert metrics["AP/traffic_light"] == pytest.approx(0.2)
    assert metrics["AP/caf___50__"] == pytest.approx(0.1)


def test_mlflow_uri_forms(tmp_path):
    assert mlflow_uri(None) == Path("mlruns").resolve().as_uri()
    assert mlflow_uri(str(tmp_path / "m")) == (tmp_path / "m").as_uri()
    for uri in ("http://localhost:5000", "sqlite:///mlflow.db", "databricks", "file:///tmp/x"):
        assert mlflow_uri(uri) == uri
    assert mlflow_uri("relative/store") == (Path.cwd() / "relative" / "store").as_uri()


def test_a_tracker_failing_after_the_run_is_one_line_naming_the_results(tmp_path):
    pytest.importorskip("mlflow")
    result = sample_run("sample", tmp_path / "r")
    with pytest.raises(UserError) as info:
        track(result, TrackingConfig(log=["mlflow"], uri="bogus-scheme://nowhere"))
    message = str(info.value)
    assert message.startswith("--log mlflow: ") and "\n" not in message
    assert f"the results were kept: {tmp_path / 'r' / 'metrics.json'}" in message


@pytest.mark.parametrize("tracker,package", [("mlflow", "mlflow-skinny"), ("tensorboard", "tensorboardX")])
def test_a_missing_extra_is_a_one_line_error_before_any_work(tmp_path, monkeypatch, capsys, tracker, package):
    module = {"mlflow": "mlflow", "tensorboard": "tensorboardX"}[tracker]
    monkeypatch.setitem(sys.modules, module, None)
    status = main(["eval", "--config", str(REPO / "configs" / "sample.yaml"), "--out", str(tmp_path / "r"),
                   "--log", tracker, "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert error == (f"ssd-eval: error: --log {tracker} needs {package}, which is not installed: "
                     f"pip install -e '.[{tracker}]' (or drop --log / tracking.log)")
    assert not (tmp_path / "r" / "metrics.json").exists()


# ---------------------------------------------------------------- TensorBoard


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit: the checksum TFRecord framing uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path: Path) -> list:
    """Every Event record of a TensorBoard event file, each length and payload checksum verified."""
    from tensorboardX.proto import event_pb2

    data, position, events = path.read_bytes(), 0, []
    while position < len(data):
        header = data[position:position + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[position + 8:position + 12])
        assert length_crc == masked_crc(header)
        payload = data[position + 12:position + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[position + 12 + length:position + 16 + length])
        assert payload_crc == masked_crc(payload)
        event = event_pb2.Event()
        event.ParseFromString(payload)
        events.append(event)
        position += 16 + length
    return events


@pytest.mark.slow
def test_tensorboard_event_file_through_the_cli(tmp_path):
    pytest.importorskip("tensorboardX")
    out, tb = tmp_path / "sample", tmp_path / "tb"
    run = run_cli("eval", "--config", "configs/sample.yaml", "--out", str(out), "--log", "tensorboard",
                  "--log-dir", str(tb), "--set", "metrics.bootstrap.replicates=0", "--set",
                  "metrics.error_breakdown=true", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert f"tracking: tensorboard {tb}" in run.stdout
    document = json.loads((out / "metrics.json").read_text())
    assert document["provenance"]["tracking"]["tensorboard"]["dir"] == str(tb)
    files = list(tb.glob("events.out.tfevents.*"))
    assert len(files) == 1
    values = {}
    for event in read_events(files[0]):
        for value in event.summary.value:
            values[value.tag] = value
    assert values["mAP"].simple_value == pytest.approx(document["mAP"], abs=1e-6)  # float32
    assert values["AP/person"].simple_value == pytest.approx(document["per_category_ap"]["person"], abs=1e-6)
    assert values["dAP/localization"].simple_value == pytest.approx(
        document["error_breakdown"]["dAP"]["localization"], abs=1e-6)
    # the same names as MLflow's metrics (issue 25)
    scalars = {tag for tag, value in values.items() if value.HasField("simple_value")}
    assert scalars == set(run_metrics(document))
    provenance = values["provenance/text_summary"].tensor.string_val[0].decode()
    assert document["provenance"]["model"]["sha256"] in provenance
    if "matplotlib" in sys.modules or _importable("matplotlib"):
        assert values["report/pr_iou50"].image.encoded_image_string.startswith(b"\x89PNG")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_tensorboard_event_file_read_by_tensorboards_own_reader(tmp_path):
    """tensorboard itself is not pinned (it brings grpcio and a 6 MB data server); run where installed."""
    pytest.importorskip("tensorboardX")
    accumulator_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    result = sample_run("sample", tmp_path / "r", ("tracking.log", ["tensorboard"]))
    accumulator = accumulator_module.EventAccumulator(str(tmp_path / "r" / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    assert "mAP" in tags["scalars"] and "AP/person" in tags["scalars"]
    [event] = accumulator.Scalars("mAP")
    assert event.value == pytest.approx(result.map, abs=1e-6) and event.step == 0


def test_merge_logs_the_merged_result(tmp_path, mlflow_client):
    for index in (1, 2):
        config = load_config(REPO / "configs" / "sample.yaml", [("output.dir", str(tmp_path / "r"))])
        ssd_eval.evaluate(config, shard=(index, 2), progress=False)
    store = tmp_path / "mlruns"
    status = main(["merge", str(tmp_path / "r" / "shard-1-of-2"), str(tmp_path / "r" / "shard-2-of-2"),
                   "--log", "mlflow", "--log-uri", str(store)])
    assert status == 0
    merged = EvalResult.from_document(read_metrics_file(tmp_path / "r" / "metrics.json"))
    run = mlflow_client(store).get_run(merged.provenance["tracking"]["mlflow"]["run_id"])
    assert run.data.metrics["mAP"] == pytest.approx(merged.map, abs=1e-12)
    assert run.data.tags["provenance.shards"] == '["1/2", "2/2"]'


def test_merge_without_out_checks_the_tensorboard_folder_it_will_write(tmp_path, capsys):
    """Without --out, merge writes to the shards' config's output folder: the TensorBoard folder under it
    (``<out>/tb``) is checked before the merge, not one under the current folder."""
    pytest.importorskip("tensorboardX")
    for index in (1, 2):
        config = load_config(REPO / "configs" / "sample.yaml", [("output.dir", str(tmp_path / "r"))])
        ssd_eval.evaluate(config, shard=(index, 2), progress=False)
    (tmp_path / "r" / "tb").write_text("not a folder")
    capsys.readouterr()
    status = main(["merge", str(tmp_path / "r" / "shard-1-of-2"), str(tmp_path / "r" / "shard-2-of-2"),
                   "--log", "tensorboard"])
    assert status == 2
    assert f"--log tensorboard: {tmp_path / 'r' / 'tb'} is a file" in capsys.readouterr().err
    assert not (tmp_path / "r" / "metrics.json").exists()  # stopped before the merge wrote anything


# ---------------------------------------------------------------- a tracker that cannot work (issue 22 item 5)


def test_an_unreachable_mlflow_server_fails_within_seconds_before_any_image(tmp_path):
    """Port 9 (discard) refuses connections: the run stops before its output folder exists, in one line."""
    pytest.importorskip("mlflow")
    started = time.monotonic()
    run = run_cli("eval", "--config", "configs/sample.yaml", "--out", str(tmp_path / "r"), "--log", "mlflow",
                  "--log-uri", "http://127.0.0.1:9", "--no-progress", timeout=120)
    seconds = time.monotonic() - started
    assert run.returncode == 2, run.stdout + run.stderr
    error = run.stderr.strip().splitlines()
    assert error == [error[0]] and error[0].startswith(
        "ssd-eval: error: --log mlflow: cannot reach the tracking server http://127.0.0.1:9 ("), error
    assert "--log-uri" in error[0]
    assert seconds < 20, seconds  # measured: 0.3 s (MLflow's own retries spent 4 min 11 s after the run)
    assert not (tmp_path / "r").exists()  # before any image: not even the output folder


@pytest.mark.parametrize("log", ["mlflow", "tensorboard"])
def test_a_tracking_folder_that_cannot_be_written_fails_before_any_image(tmp_path, log):
    pytest.importorskip({"mlflow": "mlflow", "tensorboard": "tensorboardX"}[log])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    option = "--log-uri" if log == "mlflow" else "--log-dir"
    status = main(["eval", "--config", str(REPO / "configs" / "sample.yaml"), "--out", str(tmp_path / "r"),
                   "--log", log, option, str(blocker / "store"), "--no-progress"])
    assert status == 2
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserError, match=rf"^--log {log}: {re.escape(str(blocker / 'store'))} is a file"):
        check_trackers(TrackingConfig(log=[log], uri=str(blocker / "store"), tensorboard_dir=str(blocker / "store")),
                       tmp_path / "r")


@pytest.fixture
def hanging_up_server():
    """A TCP server on 127.0.0.1 that accepts each connection and closes it at once: reachable before the
    run, an HTTP server that fails every request after it (MLflow retries such failures)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


def test_a_tracking_server_failing_after_the_run_is_given_up_within_seconds(tmp_path, hanging_up_server):
    """MLflow's default retries (7, backoff factor 2) spend minutes; bounded, the error comes in seconds,
    one line, saying the results were kept."""
    pytest.importorskip("mlflow")
    result = sample_run("sample", tmp_path / "r")
    outcome: dict = {}

    def run():
        try:
            track(result, TrackingConfig(log=["mlflow"], uri=hanging_up_server))
        except UserError as exc:
            outcome["error"] = str(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)  # left behind, not waited for, if it hangs
    worker.start()
    worker.join(timeout=60)
    seconds = time.monotonic() - started
    assert not worker.is_alive(), "tracking still retrying after 60 s"
    message = outcome["error"]
    assert message.startswith("--log mlflow: ") and "\n" not in message
    assert message.endswith(f"(the results were kept: {tmp_path / 'r' / 'metrics.json'})")
    assert seconds < 30, seconds
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        assert name not in os.environ  # set while logging only
    assert read_metrics_file(tmp_path / "r" / "metrics.json")["mAP"] == pytest.approx(result.map)


def test_track_with_no_tracker_named_leaves_the_result_alone(tmp_path):
    from ssd_eval.config.schema import TrackingConfig
    from ssd_eval.reports.tracking import track

    result = sample_run("sample", tmp_path / "run")
    before = result.files["metrics"].read_bytes()
    assert track(result, TrackingConfig()) == {}
    assert result.files["metrics"].read_bytes() == before and not (tmp_path / "run" / "report").exists()
