"""Evaluation config: YAML files with inheritance, validated into dataclasses.

A config file may name a parent with ``extends: other.yaml`` (relative to the
file). Mappings merge key by key, child over parent; anything else replaces.
``--set a.b=value`` overrides apply last; values are parsed as YAML scalars.
Relative paths inside a config are resolved against the current directory.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml

from ssd_eval.errors import UserError, quote

log = logging.getLogger(__name__)

# The 9 classes Intel Neural Compressor's label-space detour drops: their contiguous label
# (12, 26, 29, 30, 45, 66, 68, 69, 71) is not a COCO category id (docs/PROTOCOLS.md).
INC_DROPPED_CATEGORIES = ("stop sign", "umbrella", "suitcase", "frisbee", "spoon", "remote", "cell phone",
                          "microwave", "toaster")

# Every protocol switch: its short name -> the config key that holds it. A switch left
# unset (null) in a config takes the value of the config's protocol.
SWITCH_KEYS: dict[str, str] = {
    "resize_backend": "preprocess.resize_backend",
    "skip_images_without_annotations": "dataset.skip_images_without_annotations",
    "crowd_as_ground_truth": "metrics.crowd_as_ground_truth",
    "max_detections": "postprocess.max_detections",
    "score_threshold": "postprocess.score_threshold",
    "clip_boxes": "postprocess.clip_boxes",
    "exclude_categories": "metrics.exclude_categories",
}

SWITCHED_MARK = "+"
"""Joins a protocol's name and the switches a run changed in its label: ``inc+resize_backend=pil``."""

# What each named protocol sets every switch to; sources per cell in docs/PROTOCOLS.md.
PROTOCOL_PRESETS: dict[str, dict[str, Any]] = {
    # The official COCO detection rules.
    "coco": {
        "resize_backend": "pil",
        "skip_images_without_annotations": False,
        "crowd_as_ground_truth": False,
        "max_detections": 100,
        "score_threshold": 0.0,
        "clip_boxes": True,
        "exclude_categories": [],
    },
    # Intel Neural Compressor's ONNX Runtime SSD example: ssd-12, ssd-12-int8, ssd-12-qdq.
    "inc": {
        "resize_backend": "opencv",
        "skip_images_without_annotations": True,
        "crowd_as_ground_truth": True,
        "max_detections": "all",
        "score_threshold": 0.0,
        "clip_boxes": False,
        "exclude_categories": list(INC_DROPPED_CATEGORIES),
    },
    # BowenBao/inference's ONNX export of the MLPerf SSD-ResNet34 reference: ssd-10.
    "mlperf-ssd": {
        "resize_backend": "pil",
        "skip_images_without_annotations": True,
        "crowd_as_ground_truth": False,
        "max_detections": "all",
        "score_threshold": 0.0,
        "clip_boxes": False,
        "exclude_categories": [],
    },
}

# Old protocol names and what they mean now.
PROTOCOL_ALIASES = {"reference": "inc"}

# ``protocol: published`` means the protocol named by the variant's model.published_protocol.
PUBLISHED = "published"


@dataclass
class ModelConfig:
    """The ONNX model file, where to get it, and what it is expected to be."""

    path: str = ""
    url: Optional[str] = None
    size: Optional[int] = None
    sha256: Optional[str] = None
    opset: Optional[int] = None
    published_map: Optional[float] = None
    # The protocol the published mAP was measured under, and the value its source itself printed
    # or listed where that differs from the published one (e.g. 0.19578 behind ssd-10's 0.195).
    published_protocol: Optional[Literal["coco", "inc", "mlperf-ssd"]] = None
    source_map: Optional[float] = None
    # The CPU int8 kernel class (cpu.KERNEL_CLASSES) a quantized model's published mAP was measured on.
    published_int8_path: Optional[str] = None
    parent: Optional[str] = None
    input_name: Optional[str] = None
    boxes_output: list[str] = field(default_factory=lambda: ["bboxes", "detection_bboxes", "boxes"])
    labels_output: list[str] = field(default_factory=lambda: ["labels", "detection_classes", "classes"])
    scores_output: list[str] = field(default_factory=lambda: ["scores", "detection_scores"])


@dataclass
class DatasetConfig:
    """A COCO-format annotation file, its image folder and which images to use."""

    annotations: str = ""
    images: str = ""
    annotations_url: Optional[str] = None
    images_url: Optional[str] = None
    downloads_dir: str = "data/downloads"
    # What the two zips must be (checked after download); null: not checked.
    annotations_zip_size: Optional[int] = None
    annotations_zip_sha256: Optional[str] = None
    images_zip_size: Optional[int] = None
    images_zip_sha256: Optional[str] = None
    limit: Optional[int] = None
    on_bad_image: Literal["error", "skip"] = "error"
    skip_images_without_annotations: Optional[bool] = None
    # A named image subset: subsets/<name>.json (or a path to a subset file); null: every image.
    subset: Optional[str] = None


@dataclass
class PreprocessConfig:
    """How an image becomes the model's input tensor."""

    input_size: list[int] = field(default_factory=lambda: [1200, 1200])  # height, width
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    scale: float = 1.0 / 255.0
    resize_backend: Optional[Literal["pil", "opencv"]] = None


@dataclass
class PostprocessConfig:
    """How raw model outputs become COCO results (null switches: the protocol decides)."""

    max_detections: Optional[int | Literal["all"]] = None  # per image, best first; "all": every output
    score_threshold: Optional[float] = None
    clip_boxes: Optional[bool] = None  # clip boxes to the image before scoring
    # Explicit COCO category id for contiguous labels 1..K; default: sorted ids of the file.
    label_map: Optional[list[int]] = None


@dataclass
class RuntimeConfig:
    """onnxruntime session settings."""

    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    optimized_model_cache: Optional[str] = None
    batch_size: int = 1
    # onnxruntime session config entries (SessionOptions.add_session_config_entry), e.g.
    # {session.x64quantprecision: "1"}; part of the cache key and the provenance.
    session_config: dict[str, str] = field(default_factory=dict)
    # Quantized models on x86 CPUs without VNNI: compute what a VNNI CPU computes
    # (session.x64quantprecision=1, slower) instead of the CPU's saturating u8s8 kernels.
    exact_int8: bool = True
    # onnxruntime's idle threads spin (busy-wait) for work by default: CPU the decode workers may need
    # when they share the cores. null: onnxruntime's default (on); true / false: on / off
    # (runner.spinning_entries). Changes no detection; not in the cache key.
    allow_spinning: Optional[bool] = None


@dataclass
class PipelineConfig:
    """The decode/preprocess pool that runs ahead of inference."""

    workers: int = 0  # 0: sized to the machine
    mode: Literal["thread", "process"] = "thread"
    prefetch: int = 0  # images in flight ahead of inference; 0: 2 x workers x batch
    # The lookup that normalizes (preprocess.NORMALIZE_ROUTES; auto: OpenCV's where installed). Every
    # route gives the same bits, so it is not in the cache key; it is here to measure one against another.
    normalize: Literal["auto", "opencv-lut", "numpy-take"] = "auto"
    # Seconds between progress lines in logs (stderr not a terminal); the first comes early (pipeline.ProgressLines).
    progress_interval_s: float = 120.0


@dataclass
class BootstrapConfig:
    """Bootstrap confidence intervals for mAP, AP50 and AP75 over the run's images (ssd_eval.uncertainty)."""

    replicates: int = 1000  # 0: no intervals
    seed: int = 0
    level: float = 0.95
    # Only runs of at most this many images get intervals by default: the cost is one more matching
    # pass plus the replicates, about 4 s at 500 images and 44 s at 5000 (100 detections each), as
    # much as pycocotools' whole scoring; null: every run.
    max_images: Optional[int] = 2000


@dataclass
class MetricsConfig:
    """How detections are scored."""

    backend: str = "pycocotools"  # a name of metrics.BACKENDS
    crowd_as_ground_truth: Optional[bool] = None
    # Category names left out of the mean (the mean is over the rest of the file's categories).
    exclude_categories: Optional[list[str]] = None
    # Match detections a chunk of images at a time as they are read back, keeping a few bytes per detection
    # (ssd_eval.streaming; the same numbers); false: every detection at once. faster-coco-eval never streams.
    streaming: bool = True
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    # TIDE-style error breakdown in metrics.json (ssd_eval.errors_breakdown); null: when hotcoco is installed.
    error_breakdown: Optional[bool] = None


@dataclass
class TrackingConfig:
    """Experiment tracking after a run (ssd_eval.tracking); off unless ``log`` names a tracker."""

    log: list[Literal["mlflow", "tensorboard"]] = field(default_factory=list)
    uri: Optional[str] = None  # MLflow tracking URI; null: the file store ./mlruns
    experiment: str = "ssd_eval"  # MLflow experiment name
    tensorboard_dir: Optional[str] = None  # null: <output dir>/tb


@dataclass
class OutputConfig:
    """Where results go and whether finished images are cached for resume."""

    # {run} is the variant, plus "-<protocol>" when the protocol is not plain coco.
    dir: str = "results/{run}"
    resume: bool = True


@dataclass
class Config:
    """A whole evaluation run."""

    variant: str = "custom"
    protocol: Literal["coco", "inc", "mlperf-ssd", "published", "reference"] = "coco"
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})
    # The keys of PARTIAL_KEYS whose value differs from the config file's (--model, --annotations,
    # --images, --set, or a dict over the file it extends): they make a run partial (partial_parts).
    overridden: tuple[str, ...] = field(default=(), metadata={"internal": True})

    @property
    def out_dir(self) -> Path:
        """The output directory with ``{run}``, ``{variant}`` and ``{protocol}`` filled in.

        ``{run}`` is ``run_name`` of the variant, protocol, subset and what makes the run partial
        (``partial_parts``): a partial run never writes to the folder of the full run.
        """
        protocol = self.protocol_label()
        run = run_name(self.variant, protocol, self.subset_name, [part for part, _ in self.partial_parts()])
        text = self.output.dir.replace("{run}", run).replace("{variant}", self.variant)
        return Path(text.replace("{protocol}", protocol))

    @property
    def subset_name(self) -> Optional[str]:
        """The name of the image subset ``dataset.subset`` names, or None for every image."""
        from ssd_eval.subsets import subset_run_name

        return None if self.dataset.subset is None else subset_run_name(self.dataset.subset)

    def partial_parts(self) -> list[tuple[str, str]]:
        """What makes this a partial run, as (results-folder part, description) pairs: a
        ``dataset.limit`` (``limit3``), a model other than the config file's (``model-<sha12>``),
        another annotation file (``annotations-<sha12>``) or image folder (``images-<sha12 of its
        path>``). Empty for a full run of the config as its file describes it."""
        parts = []
        if self.dataset.limit is not None:
            parts.append((f"limit{self.dataset.limit}", f"limit {self.dataset.limit}"))
        if "model.path" in self.overridden:
            parts.append((f"model-{_file_sha12(self.model.path)}", f"model {self.model.path}"))
        if "dataset.annotations" in self.overridden:
            parts.append((f"annotations-{_file_sha12(self.dataset.annotations)}",
                          f"annotations {self.dataset.annotations}"))
        if "dataset.images" in self.overridden:
            resolved = str(Path(self.dataset.images).resolve())
            parts.append((f"images-{hashlib.sha256(resolved.encode()).hexdigest()[:12]}",
                          f"images {self.dataset.images}"))
        return parts

    def switches(self) -> dict[str, Any]:
        """Every protocol switch in force (explicit values, else the protocol's preset)."""
        preset = PROTOCOL_PRESETS[self.protocol]
        values = {}
        for name, key in SWITCH_KEYS.items():
            section, attribute = key.split(".")
            value = getattr(getattr(self, section), attribute)
            values[name] = preset[name] if value is None else value
        return values

    def protocol_label(self) -> str:
        """The protocol's name when the switches match its preset, else e.g. ``inc+resize_backend=pil``."""
        switches = self.switches()
        for name, preset in PROTOCOL_PRESETS.items():
            if switches == preset:
                return name
        preset = PROTOCOL_PRESETS[self.protocol]
        differing = [f"{k}={_label_value(v)}" for k, v in switches.items() if preset[k] != v]
        return self.protocol + SWITCHED_MARK + ",".join(differing)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (without internal bookkeeping)."""
        data = dataclasses.asdict(self)
        for internal in ("source", "overridden"):
            data.pop(internal, None)
        return data

    def sha256(self) -> str:
        """A stable hash of the resolved config."""
        return hash_data(self.to_dict())


def protocol_base(label: str) -> str:
    """The protocol a protocol label (Config.protocol_label) starts from: ``inc`` for ``inc`` and
    ``inc+resize_backend=pil``."""
    return label.split(SWITCHED_MARK, 1)[0]


def run_name(variant: str, protocol: str, subset: Optional[str] = None, partial: Sequence[str] = ()) -> str:
    """A run's name, the results folder `output.dir: results/{run}` gives it: the variant for
    protocol coco, ``<variant>-<protocol>`` otherwise; ``@<subset>`` appended for a run on a named
    image subset (``dataset.subset``), e.g. ``ssd-12-int8@ci-500``; then ``@<part>`` for each thing
    that makes the run partial (``Config.partial_parts``), e.g. ``sample@limit3`` or
    ``sample@model-1b21e54584bc``: the canonical folder (no partial part) is written only by full runs."""
    name = variant if protocol == "coco" else f"{variant}-{protocol}"
    name = name if subset is None else f"{name}@{subset}"
    return "".join([name, *(f"@{part}" for part in partial)])


# Config keys whose value, when it differs from the config file's, makes a run partial.
PARTIAL_KEYS = ("model.path", "dataset.annotations", "dataset.images")


def _file_sha12(path: str) -> str:
    """The first 12 hex digits of a file's sha256 (cached per path, size and mtime); the file's
    name when it cannot be read (the run then stops at its own check of the file)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(path).name) or "missing"
    return _sha12_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha12_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def overridden_keys(file_values: dict[str, Any], merged: dict[str, Any]) -> tuple[str, ...]:
    """The PARTIAL_KEYS whose value in ``merged`` differs from ``file_values`` (their values in the
    config files alone); paths are compared resolved. A key the files leave unset has nothing to
    differ from (a config that leaves the model to ``--model``): never overridden."""
    changed = []
    for key in PARTIAL_KEYS:
        before, after = file_values.get(key), _dotted_or_none(merged, key)
        if before in (None, "") or before == after:
            continue
        if isinstance(before, str) and isinstance(after, str) and Path(before).resolve() == Path(after).resolve():
            continue
        changed.append(key)
    return tuple(changed)


def _dotted_or_none(data: dict[str, Any], dotted_key: str) -> Any:
    try:
        return get_dotted(data, dotted_key)
    except KeyError:
        return None


def _label_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ";".join(str(v) for v in value) + "]"
    return str(value)


def resolve_protocol(config: Config, origin: str = "<config>") -> Config:
    """``config`` with its protocol named plainly (aliases and ``published`` resolved) and every
    switch set, so each consumer (preprocess, postprocess, metrics, cache key, shards, table)
    reads the values in force and none can forget one."""
    if config.protocol == PUBLISHED:
        if config.model.published_protocol is None:
            raise UserError(f"{origin}: protocol 'published' needs model.published_protocol, which variant "
                            f"{config.variant!r} does not set (it has no published number)")
        config.protocol = config.model.published_protocol
    elif config.protocol in PROTOCOL_ALIASES:
        log.warning("protocol %r is an old name for %r (see docs/PROTOCOLS.md)", config.protocol,
                    PROTOCOL_ALIASES[config.protocol])
        config.protocol = PROTOCOL_ALIASES[config.protocol]
    for name, value in config.switches().items():
        section, attribute = SWITCH_KEYS[name].split(".")
        setattr(getattr(config, section), attribute, list(value) if isinstance(value, list) else value)
    return config


def flatten_dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def get_dotted(data: dict[str, Any], dotted_key: str) -> Any:
    """The value at ``a.b.c`` in nested mappings; KeyError naming the key when a part is missing."""
    node: Any = data
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted_key)
        node = node[part]
    return node


def hash_data(data: Any) -> str:
    """sha256 of the canonical JSON form of ``data``."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_config(path: str | Path, overrides: Sequence[str | tuple] = ()) -> Config:
    """Load a YAML config (following ``extends``), apply overrides, validate.

    Each override is ``"a.b=value"`` (value parsed as YAML), a ``(key, value)`` pair, or a
    ``(key, value, origin)`` triple whose origin (e.g. ``"--limit"``) is named in errors.
    """
    path = Path(path)
    merged, origins = _load_merged(path, seen=())
    file_values = {key: _dotted_or_none(merged, key) for key in PARTIAL_KEYS}
    for item in overrides:
        if isinstance(item, str):
            key, value = parse_override(item)
            origin = "--set"
        else:
            key, value, origin = item if len(item) == 3 else (*item, "--set")
        _set_dotted(merged, key, value, origin=origin, origins=origins)
    config = config_from_dict(merged, origins=origins, default_origin=str(path))
    config.source = str(path)
    config.overridden = overridden_keys(file_values, merged)
    return config


def variant_configs(configs_dir: str | Path = "configs") -> dict[str, Path]:
    """Every variant config of ``configs_dir``: the ``*.yaml`` files whose ``variant`` is their own
    file name (shared bases such as base.yaml name none), by variant, sorted."""
    found = {}
    for path in sorted(Path(configs_dir).glob("*.yaml"), key=lambda p: p.stem):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(f"{path}: cannot read config: {str(exc).splitlines()[0]}") from None
        if isinstance(data, dict) and data.get("variant") == path.stem:
            found[path.stem] = path
    return found


def config_from_dict(
    data: dict[str, Any], *, origins: dict[str, str] | None = None, default_origin: str = "<dict>"
) -> Config:
    """Validate a plain mapping into a Config; errors name the offending key and its file.

    A mapping may name a config file to start from with ``extends`` (relative to the current
    directory); its own keys then apply over that file's, as ``--set`` would.
    """
    if isinstance(data, dict) and "extends" in data:
        return _config_extending_a_file(data, default_origin)
    origins = origins or {}
    config = _build(Config, data, prefix="", origins=origins, default_origin=default_origin)
    _check_values(config, origins, default_origin)
    return resolve_protocol(config, origins.get("protocol", default_origin))


def _config_extends_path(data: dict[str, Any], origin: str) -> Path:
    parent = data["extends"]
    if not isinstance(parent, (str, Path)) or not str(parent):
        raise UserError(f"{origin}: key 'extends' must be the path of a config file, got {quote(parent)}")
    path = Path(parent)
    if not path.is_file():
        raise UserError(f"{origin}: extends {str(parent)!r}: config file not found (a mapping's 'extends' is "
                        f"relative to the current directory, {Path.cwd()})")
    return path


def _config_extending_a_file(data: dict[str, Any], origin: str) -> Config:
    """config_from_dict of a mapping with ``extends``: the file's config with the mapping's keys over it."""
    path = _config_extends_path(data, origin)
    own = copy.deepcopy({key: value for key, value in data.items() if key != "extends"})
    merged, origins = _load_merged(path, seen=())
    file_values = {key: _dotted_or_none(merged, key) for key in PARTIAL_KEYS}
    _check_unknown_keys(own, Config, prefix="", origin=origin)
    _deep_merge(merged, own, origin=origin, origins=origins, prefix="")
    config = config_from_dict(merged, origins=origins, default_origin=str(path))
    config.source = str(path)
    config.overridden = overridden_keys(file_values, merged)
    return config


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``a.b=value`` into the dotted key and the YAML-parsed value."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set runtime.batch_size=2")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


# ---------------------------------------------------------------- loading


def _load_merged(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    resolved = path.resolve()
    if resolved in seen:
        raise UserError(f"{path}: 'extends' loops back to itself")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{where}: malformed YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys, not {type(data).__name__}")
    parent_name = data.pop("extends", None)
    origins: dict[str, str] = {}
    merged: dict[str, Any] = {}
    if parent_name is not None:
        if not isinstance(parent_name, str):
            raise UserError(f"{path}: key 'extends' must be a file name")
        merged, origins = _load_merged(path.parent / parent_name, seen + (resolved,))
    _check_unknown_keys(data, Config, prefix="", origin=str(path))
    _deep_merge(merged, data, origin=str(path), origins=origins, prefix="")
    return merged, origins


def _deep_merge(base: dict, update: dict, *, origin: str, origins: dict[str, str], prefix: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if value is None and isinstance(base.get(key), dict):
            continue  # a section whose keys are all commented out inherits the parent's
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, origin=origin, origins=origins, prefix=dotted + ".")
        else:
            base[key] = value
            origins[dotted] = origin
            if isinstance(value, dict):
                for sub in _dotted_keys(value, dotted + "."):
                    origins[sub] = origin


def _dotted_keys(data: dict, prefix: str) -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(prefix + str(key))
        if isinstance(value, dict):
            keys.extend(_dotted_keys(value, f"{prefix}{key}."))
    return keys


def _set_dotted(data: dict, key: str, value: Any, *, origin: str, origins: dict[str, str]) -> None:
    parts = key.split(".")
    node: Any = data
    cls: Any = Config
    for i, part in enumerate(parts):
        fields = _public_fields(cls) if cls is not None else {}
        if cls is not None and part not in fields:
            raise UserError(f"{origin}: unknown key {key!r}{_suggest(part, fields)}")
        hint = _field_type(cls, part) if cls is not None else None
        cls = hint if dataclasses.is_dataclass(hint) else None
        if i == len(parts) - 1:
            node[part] = value
        else:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
    origins[key] = origin


def _check_unknown_keys(data: dict, cls: type, *, prefix: str, origin: str) -> None:
    fields = _public_fields(cls)
    for key, value in data.items():
        if key not in fields:
            raise UserError(f"{origin}: unknown key {prefix + str(key)!r}{_suggest(str(key), fields)}")
        hint = _field_type(cls, key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            _check_unknown_keys(value, hint, prefix=f"{prefix}{key}.", origin=origin)


def _suggest(name: str, fields: dict) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"


# ---------------------------------------------------------------- validation


def _public_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _build(cls: type, data: Any, *, prefix: str, origins: dict[str, str], default_origin: str) -> Any:
    where = origins.get(prefix.rstrip("."), default_origin)
    if data is None:  # a section whose keys are all commented out
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where}: key {prefix.rstrip('.')!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = _public_fields(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in fields:
            where = origins.get(dotted, default_origin)
            raise UserError(f"{where}: unknown key {dotted!r}{_suggest(str(key), fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, prefix=dotted + ".", origins=origins, default_origin=default_origin)
        else:
            kwargs[key] = _coerce(value, hint, dotted, origins.get(dotted, default_origin))
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str, origin: str) -> Any:
    ok, coerced = _match(value, hint)
    if not ok:
        raise UserError(f"{origin}: key {key!r} must be {_describe(hint)}, got {quote(value)}")
    return coerced


def _match(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, coerced = _match(value, arg)
            if ok:
                return True, coerced
        return False, None
    if hint is type(None):
        return value is None, None
    if origin is Literal:
        return value in args, value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return False, None
        items = {}
        for key, item in value.items():
            ok, coerced = _match(item, args[1])
            if not ok:
                return False, None
            items[key] = coerced
        return True, items
    if origin is list:
        if not isinstance(value, list):
            return False, None
        items = []
        for item in value:
            ok, coerced = _match(item, args[0])
            if not ok:
                return False, None
            items.append(coerced)
        return True, items
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is str:
        return isinstance(value, str), value
    if hint is Any:
        return True, value
    return False, None


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return text + " or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of names to values ({_describe(args[1])})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _check_values(config: Config, origins: dict[str, str], default_origin: str) -> None:
    def fail(key: str, message: str) -> None:
        raise UserError(f"{origins.get(key, default_origin)}: key {key!r} {message}")

    pre = config.preprocess
    if len(pre.input_size) != 2 or min(pre.input_size) <= 0:
        fail("preprocess.input_size", f"must be [height, width] of positive integers, got {pre.input_size}")
    if len(pre.mean) != 3 or not all(math.isfinite(v) for v in pre.mean):
        fail("preprocess.mean", f"must have 3 values (R, G, B), all finite, got {pre.mean}")
    if len(pre.std) != 3 or not all(math.isfinite(v) and v > 0 for v in pre.std):
        fail("preprocess.std", f"must have 3 finite positive values (R, G, B), got {pre.std}")
    if not (math.isfinite(pre.scale) and pre.scale > 0):
        fail("preprocess.scale", f"must be a finite positive number, got {pre.scale}")
    post = config.postprocess
    if isinstance(post.max_detections, int) and post.max_detections <= 0:
        fail("postprocess.max_detections", "must be a positive number of detections or 'all'")
    if post.score_threshold is not None and not math.isfinite(post.score_threshold):
        fail("postprocess.score_threshold", f"must be a finite number, got {post.score_threshold}")
    from ssd_eval.cpu import KERNEL_CLASSES
    from ssd_eval.metrics import BACKENDS  # the registry lives with the scoring code

    if config.model.published_int8_path not in (None, *KERNEL_CLASSES):
        fail("model.published_int8_path", f"must be one of {', '.join(KERNEL_CLASSES)} or null, "
                                          f"got {quote(config.model.published_int8_path)}")

    if config.metrics.backend not in BACKENDS:
        fail("metrics.backend", f"must be one of {', '.join(repr(b) for b in BACKENDS)}, "
                                f"got {quote(config.metrics.backend)}")
    excluded = config.metrics.exclude_categories or []
    if len(set(excluded)) != len(excluded):
        fail("metrics.exclude_categories", "names a category twice")
    if config.runtime.batch_size <= 0:
        fail("runtime.batch_size", "must be positive")
    if config.dataset.limit is not None and config.dataset.limit <= 0:
        fail("dataset.limit", "must be a positive number of images")
    if config.dataset.subset is not None:
        from ssd_eval.subsets import subset_file

        try:
            subset_file(config.dataset.subset)
        except UserError as exc:
            fail("dataset.subset", f"names no subset: {exc}")
        if config.dataset.limit is not None:
            fail("dataset.subset", f"({config.dataset.subset}) and dataset.limit ({config.dataset.limit}) are both "
                                   "set: a subset is a fixed list of images; drop one of them")
    boot = config.metrics.bootstrap
    if boot.replicates < 0 or boot.seed < 0:
        fail("metrics.bootstrap.replicates", "and metrics.bootstrap.seed must not be negative")
    if not 0 < boot.level < 1:
        fail("metrics.bootstrap.level", f"must be between 0 and 1 (e.g. 0.95), got {boot.level}")
    if boot.max_images is not None and boot.max_images <= 0:
        fail("metrics.bootstrap.max_images", "must be a positive number of images or null")
    if config.pipeline.workers < 0 or config.pipeline.prefetch < 0:
        fail("pipeline.workers", "and pipeline.prefetch must not be negative")
    if not (math.isfinite(config.pipeline.progress_interval_s) and config.pipeline.progress_interval_s > 0):
        fail("pipeline.progress_interval_s", f"must be a positive number of seconds, got "
                                             f"{config.pipeline.progress_interval_s}")
    if not config.runtime.providers:
        fail("runtime.providers", "must name at least one execution provider")
    for key, sha in (("model.sha256", config.model.sha256),
                     ("dataset.annotations_zip_sha256", config.dataset.annotations_zip_sha256),
                     ("dataset.images_zip_sha256", config.dataset.images_zip_sha256)):
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
            fail(key, f"must be 64 hex digits or null, got {quote(sha)}")
    if not config.model.path:
        fail("model.path", "must be set (or pass --model PATH)")
    if not config.dataset.annotations:
        fail("dataset.annotations", "must be set (or pass --annotations PATH)")
    if not config.dataset.images:
        fail("dataset.images", "must be set (or pass --images DIR)")
