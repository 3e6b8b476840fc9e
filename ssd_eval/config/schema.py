"""The config dataclasses: every key a run reads with its default and allowed values, run naming, and the
protocol switches in force (config.load reads YAML files into them)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from ssd_eval import extras
from ssd_eval.config.protocols import PROTOCOL_PRESETS, SWITCH_KEYS, SWITCHED_MARK, _label_value
from ssd_eval.utils import hash_data, sha256_of

# The CPU int8 kernel classes (inference.cpu tells which one this CPU gets), as model.published_int8_path names them.
KERNEL_CLASSES = ("x86-amx", "x86-vnni", "x86-avx512", "x86-avx2", "x86-sse4.1",
                  "arm64-i8mm", "arm64-dotprod", "arm64", "unknown")

# The scoring libraries metrics.backend can name, pycocotools (the reference) first; scoring.cocoeval implements them.
SCORING_BACKENDS = ("pycocotools", "hotcoco")

# The keys that make a run partial when set other than in its config file -> their results-folder name part.
PARTIAL_KEYS = {"model.path": "model", "dataset.annotations": "annotations", "dataset.images": "images"}


@dataclass
class ModelConfig:
    """The ONNX model file, where to get it, and what it is expected to be."""

    path: str = ""
    url: Optional[str] = None
    size: Optional[int] = None
    sha256: Optional[str] = None
    opset: Optional[int] = None
    published_map: Optional[float] = None
    # published_map's protocol, and the value its source printed where that differs (ssd-10: 0.19578 for 0.195)
    published_protocol: Optional[Literal["coco", "inc", "mlperf-ssd"]] = None
    source_map: Optional[float] = None
    published_int8_path: Optional[str] = None  # the KERNEL_CLASSES entry a quantized published mAP was measured on
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
    subset: Optional[str] = None  # subsets/<name>.json or a subset file's path; null: every image


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
    keep_inverted_boxes: Optional[bool] = None  # true: an inverted box keeps its negative width or height
    label_map: Optional[list[int]] = None  # COCO category id of labels 1..K; null: postprocess.COCO_80_IDS
    box_format: Literal["xyxy", "yxyx", "xywh"] = "xyxy"  # the order of the 4 box values (postprocess.BOX_FORMATS)
    box_scale: Optional[list[float]] = None  # the [width, height] boxes are relative to; null: normalized


@dataclass
class RuntimeConfig:
    """onnxruntime session settings."""

    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    optimized_model_cache: Optional[str] = None
    batch_size: int = 1
    session_config: dict[str, str] = field(default_factory=dict)  # SessionOptions config entries; in the cache key
    exact_int8: bool = True  # int8 on x86 without VNNI: compute what a VNNI CPU computes (docs/QUANTIZATION.md)
    allow_spinning: Optional[bool] = None  # runner.spinning_entries; changes no detection: not in the cache key


@dataclass
class PipelineConfig:
    """The decode/preprocess pool that runs ahead of inference."""

    workers: int = 0  # 0: sized to the machine
    mode: Literal["thread", "process"] = "thread"
    prefetch: int = 0  # images in flight ahead of inference; 0: 2 x workers x batch
    normalize: Literal["auto", "opencv-lut", "numpy-take"] = "auto"  # same bits on every route: not in the cache key
    progress_interval_s: float = 120.0  # between progress lines when stderr is not a terminal


@dataclass
class BootstrapConfig:
    """Bootstrap confidence intervals for mAP, AP50 and AP75 over the run's images (ssd_eval.scoring.bootstrap)."""

    replicates: int = 1000  # 0: no intervals
    seed: int = 0
    level: float = 0.95
    max_images: Optional[int] = 2000  # larger runs get no intervals (44 s at 5000 images); null: every run


@dataclass
class MetricsConfig:
    """How detections are scored."""

    backend: str = "pycocotools"  # one of SCORING_BACKENDS
    crowd_as_ground_truth: Optional[bool] = None
    exclude_categories: Optional[list[str]] = None  # category names left out of the mean
    streaming: bool = True  # match detections a chunk of images at a time (ssd_eval.scoring.streaming)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    error_breakdown: bool = False  # TIDE-style breakdown in metrics.json (ssd_eval.scoring.breakdown; hotcoco)


@dataclass
class TrackingConfig:
    """Experiment tracking after a run (ssd_eval.reports.tracking); off unless ``log`` names a tracker."""

    log: list[Literal["mlflow", "tensorboard"]] = field(default_factory=list)
    uri: Optional[str] = None  # MLflow tracking URI; null: the file store ./mlruns
    experiment: str = "ssd_eval"  # MLflow experiment name
    tensorboard_dir: Optional[str] = None  # null: <output dir>/tb


@dataclass
class OutputConfig:
    """Where results go and whether finished images are cached for resume."""

    dir: str = "results/{run}"  # {run}: run_name
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
    overridden: tuple[str, ...] = field(default=(), metadata={"internal": True})  # PARTIAL_KEYS set over the file's
    named_by: Optional[str] = field(default=None, metadata={"internal": True})  # "--name": the run has its own name

    @property
    def out_dir(self) -> Path:
        """The output directory with ``{run}`` (run_name), ``{variant}`` and ``{protocol}`` filled in: a partial
        run never writes to the folder of the full run."""
        protocol = self.protocol_label()
        run = run_name(self.variant, protocol, self.subset_name, [part for part, _ in self.partial_parts()])
        text = self.output.dir.replace("{run}", run).replace("{variant}", self.variant)
        return Path(text.replace("{protocol}", protocol))

    @property
    def subset_name(self) -> Optional[str]:
        """The name of the image subset ``dataset.subset`` names, or None for every image."""
        from ssd_eval.data.subsets import subset_run_name

        return None if self.dataset.subset is None else subset_run_name(self.dataset.subset)

    def value_at(self, key: str) -> Any:
        """The value of a ``section.name`` key, e.g. ``model.path``."""
        section, name = key.split(".")
        return getattr(getattr(self, section), name)

    def partial_parts(self) -> list[tuple[str, str]]:
        """What makes this a partial run, as (folder-name part, description) pairs: ``dataset.limit`` (``limit3``),
        then, unless ``--name`` named the run, each ``overridden`` key (``model-<sha12>``, ``images-<path sha12>``)."""
        limit = self.dataset.limit
        parts = [] if limit is None else [(f"limit{limit}", f"limit {limit}")]
        for key, label in PARTIAL_KEYS.items():
            if key in self.overridden and not self.named_by:
                path = self.value_at(key)
                if key == "dataset.images":
                    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]
                else:
                    digest = _file_sha12(path)
                parts.append((f"{label}-{digest}", f"{label} {path}"))
        return parts

    def switches(self) -> dict[str, Any]:
        """Every protocol switch in force (explicit values, else the protocol's preset)."""
        preset = PROTOCOL_PRESETS[self.protocol]
        values = {name: self.value_at(key) for name, key in SWITCH_KEYS.items()}
        return {name: preset[name] if value is None else value for name, value in values.items()}

    def protocol_label(self) -> str:
        """The protocol's name when the switches match its preset, else e.g. ``inc+resize_backend=pil``."""
        switches = self.switches()
        for name, preset in PROTOCOL_PRESETS.items():
            if switches == preset:
                return name
        preset = PROTOCOL_PRESETS[self.protocol]
        differing = [f"{k}={_label_value(v)}" for k, v in switches.items() if preset[k] != v]
        return self.protocol + SWITCHED_MARK + ",".join(differing)

    def needed_extras(self) -> list[extras.Need]:
        """The optional packages this config asks for (ssd_eval.extras), checked before a run starts."""
        needs = []
        if self.switches()["resize_backend"] == "opencv":
            needs.append(extras.RESIZE_OPENCV)
        if self.metrics.backend != "pycocotools":  # the reference, a core package; the others are extras
            needs.append(extras.scoring_backend(self.metrics.backend))
        if self.metrics.error_breakdown:
            needs.append(extras.ERROR_BREAKDOWN)
        return needs + [extras.tracker(name) for name in dict.fromkeys(self.tracking.log)]

    def name_record(self) -> Optional[dict[str, Any]]:
        """provenance.name of a run named on the command line (``named_by``): where the name came from, the
        config file it started from and the values that file had overridden; None otherwise."""
        if not self.named_by:
            return None
        return {"from": self.named_by, "config_file": self.source,
                "overridden": {key: self.value_at(key) for key in self.overridden if key in PARTIAL_KEYS}}

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (without internal bookkeeping)."""
        internal = {f.name for f in dataclasses.fields(self) if f.metadata.get("internal")}
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in internal}

    def sha256(self) -> str:
        """A stable hash of the resolved config."""
        return hash_data(self.to_dict())


VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""What a variant name may be: a results folder's and a baseline file's name; ``@`` separates a run name's parts."""


def run_name(variant: str, protocol: str, subset: Optional[str] = None, partial: Sequence[str] = ()) -> str:
    """A run's name (its folder under ``output.dir: results/{run}``): the variant, ``-<protocol>`` unless coco,
    then ``@<subset>`` and ``@<part>`` per ``Config.partial_parts``, e.g. ``ssd-12-int8@ci-500``, ``sample@limit3``."""
    name = variant if protocol == "coco" else f"{variant}-{protocol}"
    name = name if subset is None else f"{name}@{subset}"
    return "".join([name, *(f"@{part}" for part in partial)])


def _file_sha12(path: str) -> str:
    """The first 12 hex digits of a file's sha256 (cached per path, size and mtime); the file's
    name when it cannot be read (the run then stops at its own check of the file)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return re.sub(r"[^\w.-]", "_", Path(path).name) or "missing"
    return _sha12_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha12_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(Path(path))[:12]
