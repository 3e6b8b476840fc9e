"""Optional packages (pyproject.toml's extras): the module each provides, and the one-line error with its pip command
that a feature needing an absent one stops with; a config's (``Config.needed_extras``) are checked before a run."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Iterable

from ssd_eval.errors import UserError

# The extras of pyproject.toml: name -> (the module it provides, the package that brings it).
EXTRAS = {
    "opencv": ("cv2", "opencv-python-headless"),
    "hotcoco": ("hotcoco", "hotcoco"),
    "report": ("matplotlib", "matplotlib"),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "tensorboard": ("tensorboardX", "tensorboardX"),
}


@dataclass(frozen=True)
class Need:
    """A feature that needs an extra: what asks for it (e.g. ``metrics.error_breakdown: true``) and what to
    change instead of installing it (e.g. ``set metrics.error_breakdown: false``; empty: nothing)."""

    extra: str
    feature: str
    instead: str = ""


# What each optional feature needs: Config.needed_extras and the code using the feature name the same Need.
RESIZE_OPENCV = Need("opencv", "preprocess.resize_backend: opencv", "set preprocess.resize_backend: pil")
ERROR_BREAKDOWN = Need("hotcoco", "metrics.error_breakdown: true", "set metrics.error_breakdown: false")
REPORT = Need("report", "ssd-eval report (make report)")


def scoring_backend(name: str) -> Need:
    """What ``metrics.backend: NAME`` needs for a backend other than pycocotools: the extra of that name."""
    return Need(name, f"metrics.backend: {name}", "set metrics.backend: pycocotools")


def tracker(name: str) -> Need:
    """What ``--log NAME`` (tracking.log) needs: mlflow or tensorboard."""
    return Need(name, f"--log {name}", "drop --log / tracking.log")


def message(need: Need) -> str:
    """The one line for ``need`` when its extra is absent: the feature, the package and the pip command."""
    _module, package = EXTRAS[need.extra]
    text = f"{need.feature} needs {package}, which is not installed: pip install -e '.[{need.extra}]'"
    return text + (f" (or {need.instead})" if need.instead else "")


def require(need: Need) -> None:
    """UserError (``message``) when the module of the extra ``need`` names cannot be found."""
    try:
        module, _package = EXTRAS[need.extra]
        if importlib.util.find_spec(module) is None:
            raise UserError(message(need))
    except ValueError:  # imported already, without a spec (a stand-in): it is there
        pass


def check(needs: Iterable[Need]) -> None:
    """``require`` each need in turn: the first absent extra stops the run, before any work."""
    for need in needs:
        require(need)
