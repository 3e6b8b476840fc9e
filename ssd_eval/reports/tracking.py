"""Experiment tracking (``tracking.log``, ``--log``; off by default): a finished run's numbers and report
pictures sent to MLflow (config as params, provenance as tags, files as artifacts) and/or TensorBoard, and
where each went recorded as metrics.json's ``provenance.tracking``. A tracker that cannot work is a one-line
UserError before any image, and within seconds when it fails after the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

from ssd_eval import extras
from ssd_eval.config.schema import TrackingConfig
from ssd_eval.errors import UserError, first_line
from ssd_eval.results.result import EvalResult, write_result
from ssd_eval.scoring.cocoeval import STAT_NAMES
from ssd_eval.utils import flatten_dotted, is_number

log = logging.getLogger(__name__)

# MLflow's limits where mlflow.utils.validation does not say (MlflowClient.log_batch splits batches itself).
_MLFLOW_LIMITS = {"MAX_PARAM_VAL_LENGTH": 6000, "MAX_TAG_VAL_LENGTH": 8000, "MAX_ENTITY_KEY_LENGTH": 250}

# Seconds to wait for a TCP connect to an MLflow server before the run (check_trackers).
CONNECT_TIMEOUT_S = 5.0

# MLflow's HTTP retries while logging, where the environment does not set them: its own defaults spend minutes
# on a server that is down; with these a refused connection fails in about 3 s, a silent server in about 35 s.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def check_trackers(tracking: TrackingConfig, out_dir: Path | None = None) -> None:
    """UserError (one line) when a tracker of ``tracking.log`` cannot work: its package is missing, MLflow's
    target fails ``check_mlflow_target``, or the TensorBoard folder (once known) cannot be written."""
    extras.check(extras.tracker(name) for name in tracking.log)
    for name in dict.fromkeys(tracking.log):
        if name == "mlflow":
            check_mlflow_target(mlflow_uri(tracking.uri))
        elif tracking.tensorboard_dir or out_dir is not None:
            _check_writable(tensorboard_dir(tracking, out_dir), "--log tensorboard",
                            "--log-dir / tracking.tensorboard_dir")


def tracker_for(tracking: TrackingConfig, out_dir: Path | None) -> Callable[[EvalResult], Any] | None:
    """The ``on_result`` step sending a result to ``tracking.log``'s trackers, checked now; None when off."""
    if not tracking.log:
        return None
    check_trackers(tracking, out_dir)
    return lambda result: track(result, tracking)


def check_mlflow_target(uri: str) -> None:
    """UserError (one line) when the MLflow URI ``uri`` is an http(s) server that does not accept a TCP
    connection within ``CONNECT_TIMEOUT_S``, or a file store that cannot be written; others are left to MLflow."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        try:
            port = parsed.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise UserError(f"--log mlflow: tracking URI {uri} has a bad port; fix --log-uri / tracking.uri") from None
        try:
            with socket.create_connection((parsed.hostname or "localhost", port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as exc:
            reason = f"no answer within {CONNECT_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) \
                else exc.strerror or str(exc) or type(exc).__name__
            raise UserError(f"--log mlflow: cannot reach the tracking server {uri} ({reason}); start it, fix "
                            "--log-uri / tracking.uri, or drop --log") from None
    elif scheme == "file":
        _check_writable(Path(urllib.request.url2pathname(parsed.path)), "--log mlflow", "--log-uri / tracking.uri")
    else:
        log.info("tracking URI %s: not checked before the run (MLflow reports its own errors)", uri)


def _check_writable(folder: Path, option: str, key: str) -> None:
    """UserError (one line) when ``folder`` is not a folder, or it (or the one it would be made in) is not writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option}: {folder} is a file (or lies under one); fix {key}, or drop --log")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option}: cannot write to {existing} (permission denied); fix {key}, or drop --log")


def track(result: EvalResult, tracking: TrackingConfig) -> dict[str, Any]:
    """Send ``result`` (already written) to every tracker of ``tracking.log``; record where in its
    metrics.json (``provenance.tracking``) and return that record; nothing (``{}``) when it names none."""
    if not tracking.log:
        return {}
    from ssd_eval.reports.report import run_pictures  # the report's modules only when a run is tracked

    kept = f"(the results were kept: {result.files['metrics']})"
    try:
        check_trackers(tracking, result.out_dir)  # checked before the run too, but a server can go away
    except UserError as exc:
        raise UserError(f"{exc} {kept}") from None
    document = result.to_document()
    document["_source"] = str(result.files["metrics"])
    where: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ssd_eval-report-") as temp:
        pictures = run_pictures(document, Path(temp))
        for name in dict.fromkeys(tracking.log):
            try:
                if name == "mlflow":
                    where[name] = log_mlflow(document, result.files["metrics"], pictures, tracking)
                else:
                    where[name] = log_tensorboard(document, pictures, tensorboard_dir(tracking, result.out_dir))
            except UserError as exc:
                raise UserError(f"{exc} {kept}") from None
            except Exception as exc:  # a tracker's own failure (server down, bad URI): one line
                raise UserError(f"--log {name}: {first_line(exc)} {kept}") from None
    result.provenance["tracking"] = where
    write_result(result, result.out_dir)
    for name, record in where.items():
        log.info("tracking: %s %s", name, record)
    return where


def describe(where: dict[str, Any]) -> str:
    """One line saying where a run was logged (for the command line)."""
    parts = []
    if "mlflow" in where:
        record = where["mlflow"]
        parts.append(f"mlflow run {record['run_id']} (experiment {record['experiment']}) in {record['uri']}")
    if "tensorboard" in where:
        parts.append(f"tensorboard {where['tensorboard']['dir']}")
    return "tracking: " + "; ".join(parts)


def tensorboard_dir(tracking: TrackingConfig, out_dir: Path | None) -> Path:
    """Where TensorBoard event files go: ``tracking.tensorboard_dir``, else ``<output dir>/tb``."""
    return Path(tracking.tensorboard_dir) if tracking.tensorboard_dir else Path(out_dir or ".") / "tb"


def mlflow_uri(uri: str | None) -> str:
    """The tracking URI to use: ``uri`` when it has a scheme (file:, http:, sqlite:, databricks...),
    a local folder as a file: URI otherwise; default ./mlruns."""
    uri = uri or "mlruns"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", uri) or uri in ("databricks", "databricks-uc"):
        return uri
    return Path(uri).resolve().as_uri()


@contextlib.contextmanager
def _mlflow_environment(uri: str) -> Iterator[None]:
    """MLflow's settings while logging, where the environment does not set them: MLFLOW_HTTP_DEFAULTS and,
    for file: URIs, MLFLOW_ALLOW_FILE_STORE (without it MLflow 3 refuses its file store)."""
    settings = dict(MLFLOW_HTTP_DEFAULTS)
    if uri.startswith("file:"):
        settings["MLFLOW_ALLOW_FILE_STORE"] = "true"
    added = [name for name in settings if name not in os.environ]
    os.environ.update({name: settings[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _mlflow_limits() -> dict[str, int]:
    """MLflow's key and value length limits (mlflow.utils.validation, else _MLFLOW_LIMITS)."""
    try:
        from mlflow.utils import validation
    except ImportError:
        validation = None
    return {name: int(getattr(validation, name, default)) for name, default in _MLFLOW_LIMITS.items()}


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in '...' when cut."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def run_metrics(document: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.json worth plotting (the 12 stats, ``AP/<category>``, ``images_per_s``, the error
    breakdown's, ``interval/<stat>.<bound>``), named alike in both trackers; a refused character becomes ``_``."""
    numbers: dict[str, Any] = {name: document.get(name) for name in STAT_NAMES}
    for category, ap in (document.get("per_category_ap") or {}).items():
        if is_number(ap) and ap >= 0:  # -1: no ground truth for this category
            numbers[f"AP/{category}"] = ap
    numbers["images_per_s"] = (document.get("provenance") or {}).get("images_per_s")
    breakdown = document.get("error_breakdown")
    if isinstance(breakdown, dict):
        for part, prefix in (("dAP", "dAP"), ("counts", "errors"), ("oracles", "dAP_oracle")):
            numbers.update({f"{prefix}/{name}": value for name, value in (breakdown.get(part) or {}).items()})
    if isinstance(document.get("intervals"), dict):
        numbers.update({f"interval/{key}": value for key, value in flatten_dotted(document["intervals"]).items()})
    return {re.sub(r"[^A-Za-z0-9_\-./]", "_", key): float(value) for key, value in numbers.items() if is_number(value)}


def run_params(document: dict[str, Any]) -> dict[str, str]:
    """The resolved config, flattened (``config.<dotted key>``), plus variant and protocol."""
    provenance = document.get("provenance") or {}
    params = {"variant": document.get("variant"), "protocol": document.get("protocol"),
              "parent": document.get("parent")}
    params.update({f"config.{k}": v for k, v in flatten_dotted(provenance.get("config") or {}).items()})
    return {key: _text(value) for key, value in params.items() if value is not None}


def run_tags(document: dict[str, Any]) -> dict[str, str]:
    """The provenance, flattened (``provenance.<dotted key>``; the config is in the params)."""
    provenance = {k: v for k, v in (document.get("provenance") or {}).items() if k not in ("config", "tracking")}
    tags = {f"provenance.{k}": v for k, v in flatten_dotted(provenance).items()}
    tags["ssd_eval.metrics_json"] = document.get("_source")
    return {key: _text(value) for key, value in tags.items() if value is not None}


def log_mlflow(document: dict[str, Any], metrics_path: Path, pictures: list[Path],
               tracking: TrackingConfig) -> dict[str, str]:
    """One MLflow run with ``document``'s numbers, config, provenance and pictures; returns its address."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri(tracking.uri)
    limits = _mlflow_limits()

    def key(name: str) -> str:  # only the characters MLflow accepts, within its length limit
        return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)[:limits["MAX_ENTITY_KEY_LENGTH"]]

    with _mlflow_environment(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(tracking.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(tracking.experiment)
        run_name = Path(document["_source"]).parent.name or document["variant"]
        run = client.create_run(experiment_id, run_name=run_name,
                                tags={"variant": document["variant"], "protocol": document["protocol"]})
        run_id = run.info.run_id
        status = "FAILED"
        try:
            stamp = int(time.time() * 1000)
            metrics = [Metric(key(k), v, stamp, 0) for k, v in run_metrics(document).items()]
            params = {key(k): truncate(v, limits["MAX_PARAM_VAL_LENGTH"]) for k, v in run_params(document).items()}
            tags = {key(k): truncate(v, limits["MAX_TAG_VAL_LENGTH"]) for k, v in run_tags(document).items()}
            client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                             tags=[RunTag(k, v) for k, v in tags.items()])
            client.log_artifact(run_id, str(metrics_path))
            for picture in pictures:
                client.log_artifact(run_id, str(picture), artifact_path="report")
            status = "FINISHED"
        finally:
            client.set_terminated(run_id, status)
    return {"uri": uri, "experiment": tracking.experiment, "experiment_id": experiment_id, "run_id": run_id}


def log_tensorboard(document: dict[str, Any], pictures: list[Path], log_dir: Path) -> dict[str, str]:
    """A TensorBoard event file in ``log_dir`` with ``document``'s numbers, provenance and pictures."""
    import numpy as np
    from PIL import Image
    from tensorboardX import SummaryWriter

    log_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(logdir=str(log_dir))
    try:
        for name, value in run_metrics(document).items():  # the names MLflow's metrics get
            writer.add_scalar(name, value, global_step=0)
        provenance = {k: v for k, v in (document.get("provenance") or {}).items() if k != "tracking"}
        writer.add_text("provenance", "```\n" + json.dumps(provenance, indent=1, sort_keys=True) + "\n```", 0)
        writer.add_text("run", f"{document['variant']} ({document['protocol']}): {document.get('_source')}", 0)
        for picture in pictures:
            with Image.open(picture) as image:
                pixels = np.asarray(image.convert("RGB"))
            writer.add_image(f"report/{picture.stem}", pixels, global_step=0, dataformats="HWC")
        writer.flush()
        files = sorted(log_dir.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    finally:
        writer.close()
    return {"dir": str(log_dir), "file": str(files[-1]) if files else ""}

