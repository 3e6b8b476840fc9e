"""ssd_eval: COCO accuracy evaluation of the ONNX Model Zoo SSD-ResNet34 detectors.

Python API::

    import ssd_eval
    result = ssd_eval.evaluate("configs/sample.yaml")      # or a Config, or a dict
    print(result.map, result.files["metrics"])
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from ssd_eval.config.load import config_from_dict, load_config
from ssd_eval.config.schema import Config
from ssd_eval.errors import UserError
from ssd_eval.results.result import EvalResult

__all__ = ["Config", "EvalResult", "UserError", "evaluate", "load_config"]
try:
    __version__ = metadata.version("ssd_eval")
except metadata.PackageNotFoundError:  # run from a source tree without installing
    __version__ = "unknown"


def evaluate(config: Config | str | Path | dict[str, Any], **options: Any) -> EvalResult:
    """Evaluate a config (a Config, a YAML path or a plain mapping) and write its results.

    A mapping may start from a config file with ``"extends": "configs/sample.yaml"`` (relative to the
    current directory); its own keys apply over the file's.

    ``options`` are those of :func:`ssd_eval.engine.pipeline.evaluate` (shard, fresh, download, progress,
    strict). The result goes to the trackers ``tracking.log`` names (checked before any work), as on the
    command line; a shard's goes with its merge.
    """
    from ssd_eval.engine.pipeline import evaluate as run
    from ssd_eval.reports.tracking import tracker_for

    if isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = config_from_dict(config)
    options.setdefault("progress", False)
    if options.get("shard") is None:
        options.setdefault("on_result", tracker_for(config.tracking, config.out_dir))
    return run(config, **options)
