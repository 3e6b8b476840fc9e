"""Shared fixtures: the repository root, the real COCO subset, and the command-line runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COCO_SUBSET = ROOT.parent / "shared" / "coco-val2017-subset"


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m ssd_eval ARGS`` in a subprocess (as a user types it); output captured as text."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "ssd_eval", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def coco_subset() -> Path:
    """The 200 real val2017 images and annotations beside the checkout (skips where absent)."""
    if not (COCO_SUBSET / "annotations.json").is_file():
        pytest.skip(f"real COCO subset not found at {COCO_SUBSET} (only on development machines and CI)")
    return COCO_SUBSET


@pytest.fixture
def created_detectors(monkeypatch) -> list:
    """Every Detector that evaluate() creates, to look at its onnxruntime session."""
    from ssd_eval.engine import pipeline
    from ssd_eval.inference.runner import Detector

    made: list[Detector] = []

    class Recording(Detector):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(pipeline, "Detector", Recording)
    return made
