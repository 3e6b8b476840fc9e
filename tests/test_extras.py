"""Tests for ssd_eval.extras: what a config asks for is checked before a run starts, whatever is installed; the
sample runs on the core packages alone (requirements.lock's runtime set)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ssd_eval import extras
from ssd_eval.cli import main
from ssd_eval.config.load import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def absent(monkeypatch):
    """Make the modules of some extras look not installed (importlib.util.find_spec says None)."""
    hidden: set[str] = set()
    find_spec = importlib.util.find_spec

    def finding(name, *args, **kwargs):
        return None if name.split(".")[0] in hidden else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", finding)
    return hidden


def test_the_error_breakdown_is_off_unless_the_config_asks_whatever_is_installed():
    assert load_config(REPO / "configs" / "sample.yaml").metrics.error_breakdown is False
    assert "error_breakdown: false" in (REPO / "configs" / "base.yaml").read_text()
    from ssd_eval.config.load import variant_configs

    for path in variant_configs(REPO / "configs").values():
        assert extras.ERROR_BREAKDOWN not in load_config(path).needed_extras(), path


@pytest.mark.parametrize("overrides,line", [
    (["preprocess.resize_backend=opencv"],
     "preprocess.resize_backend: opencv needs opencv-python-headless, which is not installed: pip install -e "
     "'.[opencv]' (or set preprocess.resize_backend: pil)"),
    (["protocol=inc"],  # inc resizes with OpenCV
     "preprocess.resize_backend: opencv needs opencv-python-headless, which is not installed: pip install -e "
     "'.[opencv]' (or set preprocess.resize_backend: pil)"),
    (["metrics.backend=hotcoco"],
     "metrics.backend: hotcoco needs hotcoco, which is not installed: pip install -e '.[hotcoco]' "
     "(or set metrics.backend: pycocotools)"),
    (["metrics.error_breakdown=true"],
     "metrics.error_breakdown: true needs hotcoco, which is not installed: pip install -e '.[hotcoco]' "
     "(or set metrics.error_breakdown: false)"),
    (["tracking.log=[mlflow]"],
     "--log mlflow needs mlflow-skinny, which is not installed: pip install -e '.[mlflow]' "
     "(or drop --log / tracking.log)"),
    (["tracking.log=[tensorboard]"],
     "--log tensorboard needs tensorboardX, which is not installed: pip install -e '.[tensorboard]' "
     "(or drop --log / tracking.log)"),
])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_config_needing_an_absent_extra_stops_at_start_with_the_pip_command(tmp_path, absent, capsys, overrides,
                                                                               line, jobs):
    absent.update(("cv2", "hotcoco", "matplotlib", "mlflow", "tensorboardX"))
    arguments = [item for override in overrides for item in ("--set", override)]
    status = main(["eval", "--config", "sample", "--out", str(tmp_path / "r"), "--no-progress", "--jobs", jobs,
                   *arguments])
    assert status == 2
    assert capsys.readouterr().err.strip() == f"ssd-eval: error: {line}"
    assert not (tmp_path / "r").exists()  # stopped before any work: no folder, no shard, no job


def test_report_without_matplotlib_stops_with_the_pip_command(tmp_path, absent, capsys):
    absent.add("matplotlib")
    assert main(["report", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("ssd-eval: error: ssd-eval report (make report) needs matplotlib, "
                                               "which is not installed: pip install -e '.[report]'")


def test_the_sample_runs_on_the_core_packages_alone(tmp_path, absent, capsys):
    """requirements.lock's runtime set (numpy onnxruntime onnx pycocotools pillow tqdm pyyaml): no extra."""
    absent.update(("cv2", "hotcoco", "matplotlib", "mlflow", "tensorboardX"))
    assert main(["eval", "--config", "sample", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    document = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "error_breakdown" not in document and document["mAP"] > 0
