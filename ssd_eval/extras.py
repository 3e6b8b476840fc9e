"""Optional packages (the extras of pyproject.toml): which module each provides, and the one-line error, with
its pip command, that a feature needing an absent one stops with. Behaviour never depends on what happens to
be installed: a config either asks for a feature or not (``config.schema.Config.needed_extras``), and what it
asks for is checked before a run starts (``check``)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Iterable

from ssd_eval.errors import UserError


@dataclass(frozen=True)
class Extra:
    """An extra of pyproject.toml: its name, the module it provides and the package that brings it."""

    name: str
    module: str
    package: str


EXTRAS = {extra.name: extra for extra in (
    Extra("opencv", "cv2", "opencv-python-headless"),
    Extra("hotcoco", "hotcoco", "hotcoco"),
    Extra("report", "matplotlib", "matplotlib"),
    Extra("mlflow", "mlflow", "mlflow-skinny"),
    Extra("tensorboard", "tensorboardX", "tensorboardX"),
)}


@dataclass(frozen=True)
class Need:
    """A feature that needs an extra: what asks for it (e.g. ``metrics.error_breakdown: true``) and what to
    change instead of installing it (e.g. ``set metrics.error_breakdown: false``; empty: nothing)."""

    extra: str
    feature: str
    instead: str = ""


# What each optional feature needs, in one place: config.schema.Config.needed_extras (checked before a run) and
# the code that uses the feature (checked again where it imports the package) name the same line.
RESIZE_OPENCV = Need("opencv", "preprocess.resize_backend: opencv", "set preprocess.resize_backend: pil")
ERROR_BREAKDOWN = Need("hotcoco", "metrics.error_breakdown: true", "set metrics.error_breakdown: false")
REPORT = Need("report", "ssd-eval report (make report)")


def scoring_backend(name: str) -> Need:
    """What ``metrics.backend: NAME`` needs, for a backend other than pycocotools (a core package): its extra,
    of the same name."""
    return Need(name, f"metrics.backend: {name}", "set metrics.backend: pycocotools")


def tracker(name: str) -> Need:
    """What ``--log NAME`` (tracking.log) needs: mlflow or tensorboard."""
    return Need(name, f"--log {name}", "drop --log / tracking.log")


def installed(extra: str) -> bool:
    """Whether the module of ``extra`` can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(EXTRAS[extra].module) is not None
    except ValueError:  # imported already, without a spec (a stand-in): it is there
        return True


def message(need: Need) -> str:
    """The one line for ``need`` when its extra is absent: the feature, the package and the pip command."""
    extra = EXTRAS[need.extra]
    text = f"{need.feature} needs {extra.package}, which is not installed: pip install -e '.[{extra.name}]'"
    return text + (f" (or {need.instead})" if need.instead else "")


def require(need: Need) -> None:
    """UserError (``message``) when the extra ``need`` names is not installed."""
    if not installed(need.extra):
        raise UserError(message(need))


def check(needs: Iterable[Need]) -> None:
    """``require`` each need in turn: the first absent extra stops the run, before any work."""
    for need in needs:
        require(need)
