"""`make eval MODEL=<variant>` as a user runs it, against a local server standing in for the internet.

The variant config points its model and COCO URLs at 127.0.0.1, the server serves the sample's
model and a val2017-shaped zip of the sample images, and `ssd-eval eval --download` must fetch,
verify, extract and evaluate them in one go, then reuse the files on the next run.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import run_cli as run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        QuietHandler.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP mirror with the model file and the two COCO zips."""
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "ssd-12.onnx").write_bytes((SAMPLE / "models" / "sample.onnx").read_bytes())
    with zipfile.ZipFile(root / "val2017.zip", "w") as archive:
        for image in sorted((SAMPLE / "images").glob("*.jpg")):
            archive.write(image, f"val2017/{image.name}")
    with zipfile.ZipFile(root / "annotations_trainval2017.zip", "w") as archive:
        archive.write(SAMPLE / "annotations.json", "annotations/instances_val2017.json")
    QuietHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def write_variant_config(tmp_path: Path, base_url: str, model_bytes: bytes) -> Path:
    work = tmp_path / "work"
    config = tmp_path / "ssd-12-local.yaml"
    config.write_text(
        f"extends: {REPO / 'configs' / 'ssd-12.yaml'}\n"
        "model:\n"
        f"  path: {work / 'models' / 'ssd-12.onnx'}\n"
        f"  url: {base_url}/ssd-12.onnx\n"
        f"  size: {len(model_bytes)}\n"
        f"  sha256: {hashlib.sha256(model_bytes).hexdigest()}\n"
        "dataset:\n"
        f"  annotations: {work / 'coco' / 'annotations' / 'instances_val2017.json'}\n"
        f"  images: {work / 'coco' / 'val2017'}\n"
        f"  annotations_url: {base_url}/annotations_trainval2017.zip\n"
        f"  images_url: {base_url}/val2017.zip\n"
        f"  downloads_dir: {work / 'downloads'}\n"
        f"output:\n  dir: {work / 'results' / '{run}'}\n")
    return config


def test_eval_with_download_fetches_verifies_extracts_and_scores(mirror, tmp_path):
    root, base_url = mirror
    config = write_variant_config(tmp_path, base_url, (root / "ssd-12.onnx").read_bytes())
    first = run("eval", "--config", str(config), "--download", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert sorted(QuietHandler.requests) == ["/annotations_trainval2017.zip", "/ssd-12.onnx", "/val2017.zip"]
    work = tmp_path / "work"
    assert len(list((work / "coco" / "val2017").glob("*.jpg"))) == 8
    metrics = json.loads((work / "results" / "ssd-12" / "metrics.json").read_text())
    assert metrics["variant"] == "ssd-12" and metrics["published_map"] == 0.1898
    assert metrics["provenance"]["model"]["sha256"] == hashlib.sha256((root / "ssd-12.onnx").read_bytes()).hexdigest()
    assert metrics["mAP"] == pytest.approx(0.5316, abs=5e-5)  # the sample model on the sample images

    QuietHandler.requests = []
    second = run("eval", "--config", str(config), "--download", "--no-progress", "--fresh")
    assert second.returncode == 0, second.stderr
    assert QuietHandler.requests == []  # everything was already there and verified


def test_corrupt_model_on_the_mirror_is_rejected_and_not_kept(mirror, tmp_path):
    root, base_url = mirror
    good = (root / "ssd-12.onnx").read_bytes()
    config = write_variant_config(tmp_path, base_url, good)
    (root / "ssd-12.onnx").write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # same size, other bytes
    result = run("eval", "--config", str(config), "--download", "--no-progress")
    assert result.returncode == 2
    assert "sha256" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    models = tmp_path / "work" / "models"
    assert not (models / "ssd-12.onnx").exists()
    assert not list(models.glob("*.part"))
