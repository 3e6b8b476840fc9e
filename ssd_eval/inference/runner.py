"""onnxruntime session: providers with fallback, threads, I/O found by name, batched runs."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from ssd_eval.config.schema import ModelConfig, RuntimeConfig
from ssd_eval.errors import UserError, first_line
from ssd_eval.utils import atomic_write_json, hash_data, sha256_of

log = logging.getLogger(__name__)

GRAPH_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class RawDetections:
    """One image's raw model output: normalized xyxy boxes, contiguous labels, scores."""

    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float32


@dataclass(frozen=True)
class ModelIO:
    """The model's input and output tensor names and the input's shape."""

    input_name: str
    input_shape: tuple  # ints, or strings/None for symbolic dims
    boxes: str
    labels: str
    scores: str

    @property
    def dynamic_batch(self) -> bool:
        """Whether the input's batch dimension is symbolic."""
        return not isinstance(self.input_shape[0], int) or self.input_shape[0] <= 0


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The requested providers that are installed, in order; CPU when none of them is."""
    chosen = [p for p in requested if p in available]
    for provider in (p for p in requested if p not in available):
        log.warning("execution provider %s is not available here (available: %s); skipping it",
                    provider, ", ".join(available))
    if not chosen:
        log.warning("none of the requested providers is available; falling back to CPUExecutionProvider")
    return chosen or ["CPUExecutionProvider"]


def optimized_model_entry(model_sha256: str, runtime: RuntimeConfig, providers: Sequence[str]) -> tuple[Path, dict]:
    """Where the optimized graph of this model is cached, and its key: the source model's sha256, the onnxruntime
    version, the optimization level, the providers and the machine (an optimized graph may only suit them)."""
    key = {"source_sha256": model_sha256, "onnxruntime": ort.__version__,
           "graph_optimization": runtime.graph_optimization, "providers": list(providers),
           "machine": platform.machine()}
    name = f"{model_sha256[:16]}-{runtime.graph_optimization}-{hash_data(key)[:12]}.onnx"
    return Path(runtime.optimized_model_cache) / name, key


def _trusted_optimized_model(cached: Path, key: dict[str, Any]) -> bool:
    """Whether ``cached`` is the optimized graph its sidecar JSON describes, made under ``key``."""
    if not cached.is_file():
        return False
    sidecar = cached.with_suffix(".json")
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        trusted = (isinstance(recorded, dict) and {k: recorded.get(k) for k in key} == key
                   and recorded.get("optimized_sha256") == sha256_of(cached))
    except (OSError, ValueError, RecursionError):
        trusted = False
    if not trusted:
        log.warning("%s: does not match its record %s (replaced, or made by another model or onnxruntime); "
                    "optimizing the model again", cached, sidecar)
    return trusted


def check_threads(runtime: RuntimeConfig) -> None:
    """Refuse thread counts that are negative or absurdly above the machine's cores."""
    cores = os.cpu_count() or 1
    for name in ("intra_op_threads", "inter_op_threads"):
        value = getattr(runtime, name)
        if not 0 <= value <= 4 * cores:
            raise UserError(f"runtime.{name}: {value} must be between 0 (onnxruntime's default) and "
                            f"{4 * cores} (4 x the {cores} CPU cores here)")


SPINNING_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def spinning_entries(runtime: RuntimeConfig) -> dict[str, str]:
    """The session config entries for ``runtime.allow_spinning``: none for null (onnxruntime's default) or where
    ``runtime.session_config`` sets them. No detection depends on it, so it is not part of the cache key."""
    if runtime.allow_spinning is None or any(key in runtime.session_config for key in SPINNING_KEYS):
        return {}
    return {key: "1" if runtime.allow_spinning else "0" for key in SPINNING_KEYS}


def create_session(model_path: str | Path, runtime: RuntimeConfig, model_sha256: str | None = None,
                   session_config: Mapping[str, str] | None = None) -> ort.InferenceSession:
    """An InferenceSession for ``model_path`` with the config's providers, threads, optimization and session
    config entries (``session_config``, default ``runtime.session_config``). With ``runtime.optimized_model_cache``
    and ``model_sha256``, the optimized graph is cached there and reused while its sidecar JSON vouches for it."""
    check_threads(runtime)
    options = ort.SessionOptions()
    options.intra_op_num_threads = runtime.intra_op_threads
    options.inter_op_num_threads = runtime.inter_op_threads
    options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[runtime.graph_optimization]
    options.log_severity_level = 3
    entries = dict(runtime.session_config if session_config is None else session_config)
    for name, value in sorted({**spinning_entries(runtime), **entries}.items()):
        try:
            options.add_session_config_entry(name, value)
        except Exception as exc:  # onnxruntime's own exception types
            raise UserError(f"runtime.session_config: onnxruntime refuses {name}={value!r}: "
                            f"{first_line(exc)}") from None
    providers = choose_providers(runtime.providers, ort.get_available_providers())
    load_path = Path(model_path)
    cached = key = None
    if runtime.optimized_model_cache and model_sha256:
        cached, key = optimized_model_entry(model_sha256, runtime, providers)
        key["session_config"] = entries
        if _trusted_optimized_model(cached, key):
            # Already optimized: loading it skips the graph transformations.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            log.info("using the optimized model %s", cached)
            load_path = cached
        else:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                for stale in (cached.with_suffix(".json"), cached):  # only what this session writes may be recorded
                    stale.unlink(missing_ok=True)
            except OSError as exc:
                raise UserError(f"{cached.parent}: cannot create runtime.optimized_model_cache: "
                                f"{exc.strerror or exc}") from None
            options.optimized_model_filepath = str(cached)
    try:
        session = ort.InferenceSession(str(load_path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise UserError(f"{model_path}: onnxruntime cannot load this model: {first_line(exc)}") from None
    if cached is not None and load_path != cached and cached.is_file():
        try:  # the sidecar that lets later runs trust the file; best effort: the cache is only a speed-up
            atomic_write_json(cached.with_suffix(".json"), dict(key, optimized_sha256=sha256_of(cached)))
        except (OSError, UserError) as exc:
            log.warning("%s: not recorded, the optimized model will be made again next time (%s)", cached, exc)
    log.info("session providers: %s", session.get_providers())
    return session


def resolve_io(session: ort.InferenceSession, model: ModelConfig, model_path: str | Path) -> ModelIO:
    """Find the image input and the boxes/labels/scores outputs by name."""
    inputs = {i.name: i for i in session.get_inputs()}
    if model.input_name and model.input_name not in inputs:
        raise UserError(f"{model_path}: has no input named {model.input_name!r} (model.input_name); "
                        f"its inputs are {list(inputs)}")
    if not model.input_name and len(inputs) != 1:
        raise UserError(f"{model_path}: has inputs {list(inputs)}; set model.input_name to the image input")
    image_input = inputs[model.input_name] if model.input_name else next(iter(inputs.values()))
    output_names = [o.name for o in session.get_outputs()]

    def find(candidates: list[str], key: str) -> str:
        for name in candidates:
            if name in output_names:
                return name
        raise UserError(f"{model_path}: none of the outputs {output_names} is named like {candidates} "
                        f"({key}); set {key} to the right output name")

    if image_input.type != "tensor(float)":
        raise UserError(f"{model_path}: input {image_input.name!r} is {image_input.type}; this harness feeds "
                        "float32 images (tensor(float))")
    shape = tuple(d if isinstance(d, int) else None for d in image_input.shape)
    if len(shape) != 4:
        raise UserError(f"{model_path}: input {image_input.name!r} has shape {image_input.shape}; "
                        "expected (batch, 3, height, width)")
    return ModelIO(input_name=image_input.name, input_shape=shape,
                   boxes=find(model.boxes_output, "model.boxes_output"),
                   labels=find(model.labels_output, "model.labels_output"),
                   scores=find(model.scores_output, "model.scores_output"))


class Detector:
    """Runs batches of preprocessed images through an SSD-shaped ONNX model."""

    def __init__(self, model_path: str | Path, model: ModelConfig, runtime: RuntimeConfig,
                 input_size: Sequence[int], model_sha256: str | None = None,
                 session_config: Mapping[str, str] | None = None):
        self.model_path = Path(model_path)
        self.session_config = dict(runtime.session_config if session_config is None else session_config)
        self.session = create_session(model_path, runtime, model_sha256, self.session_config)
        self.io = resolve_io(self.session, model, model_path)
        self.inference_seconds = 0.0
        expected = (3, int(input_size[0]), int(input_size[1]))
        fixed = self.io.input_shape[1:]
        if any(f is not None and f != e for f, e in zip(fixed, expected)):
            raise UserError(f"{model_path}: input {self.io.input_name!r} expects (3, H, W) = {fixed}, "
                            f"but preprocess.input_size gives {expected[1:]}")
        if runtime.batch_size > 1 and not self.io.dynamic_batch:
            raise UserError(f"{model_path}: the model's batch dimension is fixed at {self.io.input_shape[0]}; "
                            "it cannot run runtime.batch_size > 1 (set runtime.batch_size: 1)")

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return list(self.session.get_providers())

    def run(self, images: np.ndarray) -> list[RawDetections]:
        """Detections for a (B, 3, H, W) float32 batch, one entry per image."""
        started = time.perf_counter()
        try:
            boxes, labels, scores = self.session.run(
                [self.io.boxes, self.io.labels, self.io.scores], {self.io.input_name: images})
        except Exception as exc:  # onnxruntime's own exception types
            raise UserError(f"{self.model_path}: inference failed: {first_line(exc)}") from None
        self.inference_seconds += time.perf_counter() - started
        count = images.shape[0]
        boxes = self._checked(self.io.boxes, np.asarray(boxes, dtype=np.float32), (count, None, 4))
        labels = self._checked(self.io.labels, np.asarray(labels), (count, None))
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):  # _checked: finite
            raise UserError(f"{self.model_path}: output {self.io.labels!r} holds non-integer labels")
        labels = labels.astype(np.int64)
        scores = self._checked(self.io.scores, np.asarray(scores, dtype=np.float32), (count, None))
        if not boxes.shape[1] == labels.shape[1] == scores.shape[1]:
            raise UserError(f"{self.model_path}: outputs disagree on the number of detections: "
                            f"boxes {boxes.shape}, labels {labels.shape}, scores {scores.shape}")
        return [RawDetections(boxes[i], labels[i], scores[i]) for i in range(count)]

    def _checked(self, name: str, array: np.ndarray, expected: tuple[int | None, ...]) -> np.ndarray:
        """``array`` after checking its shape against ``expected`` (None: any length) and, for floats,
        that it holds no NaN or Inf."""
        if array.ndim != len(expected) or any(e is not None and e != n for e, n in zip(expected, array.shape)):
            wanted = ", ".join("N" if e is None else str(e) for e in expected)
            raise UserError(f"{self.model_path}: output {name!r} has shape {array.shape}; expected ({wanted}) "
                            "(batch, detections" + (", x1 y1 x2 y2)" if len(expected) == 3 else ")"))
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = np.flatnonzero(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1))
            raise UserError(f"{self.model_path}: output {name!r} holds NaN or Inf (image {bad[0] + 1} of a batch "
                            f"of {array.shape[0]}); the model's output cannot be scored")
        return array
