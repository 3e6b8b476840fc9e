"""ssd_eval: COCO accuracy evaluation of the ONNX Model Zoo SSD-ResNet34 detectors.

Python API::

    import ssd_eval
    result = ssd_eval.evaluate("configs/sample.yaml")      # or a Config, or a dict
    print(result.map, result.files["metrics"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssd_eval.config.load import config_from_dict, load_config
from ssd_eval.config.schema import Config
from ssd_eval.errors import UserError
from ssd_eval.results.result import EvalResult
from ssd_eval.utils import package_version

__all__ = ["Config", "EvalResult", "UserError", "evaluate", "load_config"]
__version__ = package_version("ssd_eval") or "unknown"  # "unknown": run from a source tree without installing


def evaluate(config: Config | str | Path | dict[str, Any], **options: Any) -> EvalResult:
    """Evaluate a config (a Config, a YAML path, or a mapping, which may start from a file with ``"extends":
    "configs/sample.yaml"``) and write its results. ``options`` are those of ``ssd_eval.engine.pipeline.evaluate``;
    the result goes to the trackers ``tracking.log`` names, as on the command line (a shard's with its merge)."""
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
