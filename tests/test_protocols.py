"""Known-answer tests of the protocols and each protocol switch on real COCO val2017 annotations.

Expected stats come from an independent route written out here: the model's constant outputs
turned into COCO results by this file's own code and scored by plain pycocotools with the
matching parameters. The `inc` protocol is also checked against Intel Neural Compressor's
label-space detour (contiguous labels, both sides filtered by the COCO id set) done literally.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_eval.config.load import config_from_dict
from ssd_eval.config.protocols import INC_DROPPED_CATEGORIES, PROTOCOL_PRESETS, SWITCH_KEYS
from ssd_eval.engine.pipeline import evaluate
from ssd_eval.inference.preprocess import preprocess
from ssd_eval.scoring.cocoeval import BACKENDS
from ssd_eval.scoring.metrics import score_detections

from conftest import run_cli
from helpers import lookup_detector

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

INPUT_HW = (64, 64)  # the lookup detector only tells images apart: a small input keeps runs fast


DETECTIONS_PER_IMAGE = 110  # more than COCO's 100, so the per-image cap matters


def detector_outputs(gt: dict) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """(image ids, boxes, labels, scores): per image, a jittered copy of most ground-truth boxes
    (a few with the wrong class, some reaching past the border), then false positives; distinct
    scores, some below 0.05. Rows follow the image ids."""
    rng = np.random.Generator(np.random.PCG64(7))
    label_of = {c: k for k, c in enumerate(sorted(c["id"] for c in gt["categories"]), start=1)}
    sizes = {i["id"]: (i["width"], i["height"]) for i in gt["images"]}
    image_ids = sorted(sizes)
    boxes = np.zeros((len(image_ids), DETECTIONS_PER_IMAGE, 4))
    labels = np.zeros((len(image_ids), DETECTIONS_PER_IMAGE), dtype=np.int64)
    scores = np.zeros((len(image_ids), DETECTIONS_PER_IMAGE))
    for row, image_id in enumerate(image_ids):
        w, h = sizes[image_id]
        found = []
        for annotation in gt["annotations"]:
            if annotation["image_id"] != image_id or rng.random() < 0.15:
                continue
            x, y, bw, bh = annotation["bbox"]
            jitter = rng.normal(0, 0.08, 4) * np.array([bw / w, bh / h] * 2)
            box = np.array([x / w, y / h, (x + bw) / w, (y + bh) / h]) + jitter
            label = label_of[annotation["category_id"]] if rng.random() < 0.85 else int(rng.integers(1, 81))
            found.append((box, label, rng.uniform(0.2, 1.0)))
        while len(found) < DETECTIONS_PER_IMAGE:
            x0, y0 = rng.uniform(-0.1, 0.9, 2)
            found.append((np.array([x0, y0, x0 + rng.uniform(0.05, 0.6), y0 + rng.uniform(0.05, 0.6)]),
                          int(rng.integers(1, 81)), rng.uniform(0.0, 0.8)))
        for k, (box, label, score) in enumerate(found[:DETECTIONS_PER_IMAGE]):
            boxes[row, k], labels[row, k], scores[row, k] = box, label, score
    # Distinct scores in float32 (ties would make the order ambiguous): replace them by their ranks.
    ranks = np.argsort(np.argsort(scores, axis=None)).reshape(scores.shape)
    scores = (ranks + 1) / (scores.size + 1)
    return image_ids, boxes.astype(np.float32), labels, scores.astype(np.float32)


def input_fingerprints(gt: dict, images: Path, image_ids: list[int], backend: str) -> np.ndarray:
    """The mean of each image's model input under ``backend`` (how the lookup detector tells them apart)."""
    files = {i["id"]: i["file_name"] for i in gt["images"]}
    means = []
    for image_id in image_ids:
        with Image.open(images / files[image_id]) as image:
            tensor = preprocess(image.convert("RGB"), size_hw=INPUT_HW, mean=(0.485, 0.456, 0.406),
                                std=(0.229, 0.224, 0.225), scale=1 / 255, backend=backend)
        means.append(float(tensor.mean(dtype=np.float64)))
    gaps = np.diff(np.sort(means))
    assert gaps.min() > 1e-5, "two subset images have nearly the same input mean; the lookup needs them apart"
    return np.asarray(means)


@pytest.fixture(scope="module")
def case(coco_subset, tmp_path_factory):
    """(annotations path, images dir, {resize backend: model path}, outputs by image id, annotation data)."""
    pytest.importorskip("cv2")
    annotations, images = coco_subset / "annotations.json", coco_subset / "images"
    gt = json.loads(annotations.read_text())
    image_ids, boxes, labels, scores = detector_outputs(gt)
    folder = tmp_path_factory.mktemp("models")
    models = {backend: lookup_detector(folder / f"{backend}.onnx", input_fingerprints(gt, images, image_ids, backend),
                                       boxes, labels, scores, input_hw=INPUT_HW)
              for backend in ("pil", "opencv")}
    outputs = {image_id: (boxes[row], labels[row], scores[row]) for row, image_id in enumerate(image_ids)}
    return annotations, images, models, outputs, gt


def run_harness(case, out: Path, protocol: str = "coco", **switches) -> dict:
    annotations, images, models, _, _ = case
    data = {"variant": "lookup", "protocol": protocol,
            "dataset": {"annotations": str(annotations), "images": str(images)},
            "preprocess": {"input_size": list(INPUT_HW)}, "pipeline": {"workers": 1}, "output": {"dir": str(out)}}
    for name, value in switches.items():
        section, key = SWITCH_KEYS[name].split(".")
        data.setdefault(section, {})[key] = value
    config = config_from_dict(dict(data, model={"path": "unused"}))
    data["model"] = {"path": str(models[config.preprocess.resize_backend])}
    result = evaluate(config_from_dict(data), progress=False)
    return json.loads(result.files["metrics"].read_text())


def cocoeval_stats(gt: dict, results: list[dict], image_ids: list[int], category_ids: list[int]) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(s) for s in evaluator.stats]


def expected_stats(case, *, skip_images_without_annotations=False, crowd_as_ground_truth=False, max_detections=100,
                   score_threshold=0.0, clip_boxes=True, keep_inverted_boxes=False,
                   exclude_categories=()) -> list[float]:
    """Plain pycocotools on results made here from the constant outputs, under the given rules."""
    _, _, _, outputs, gt = case
    gt = copy.deepcopy(gt)
    category_ids = sorted(c["id"] for c in gt["categories"])  # label k -> k-th smallest id
    annotated = {a["image_id"] for a in gt["annotations"]}
    images = [i for i in gt["images"] if i["id"] in annotated or not skip_images_without_annotations]
    results = []
    for image in images:
        boxes, labels, scores = outputs[image["id"]]
        ranked = [i for i in sorted(range(len(scores)), key=lambda i: -float(scores[i]))
                  if scores[i] >= score_threshold]
        if max_detections != "all":
            ranked = ranked[:max_detections]
        for i in ranked:
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            if clip_boxes:
                x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))
            w, h = image["width"], image["height"]
            bw, bh = (x1 - x0) * w, (y1 - y0) * h
            if not keep_inverted_boxes:
                bw, bh = max(bw, 0.0), max(bh, 0.0)
            results.append({"image_id": image["id"], "category_id": category_ids[labels[i] - 1],
                            "bbox": [x0 * w, y0 * h, bw, bh], "score": float(scores[i])})
    if crowd_as_ground_truth:
        for annotation in gt["annotations"]:
            annotation["iscrowd"] = 0
    names = {c["id"]: c["name"] for c in gt["categories"]}
    averaged = [c for c in category_ids if names[c] not in exclude_categories]
    return cocoeval_stats(gt, results, sorted(i["id"] for i in images), averaged)


def inc_label_detour_stats(case) -> list[float]:
    """Intel Neural Compressor's metric route, literally: ground-truth names -> contiguous labels
    1..80, normalized boxes, detections kept contiguous and every one scored, then both sides
    filtered to the labels that are also COCO category ids; images without boxes skipped."""
    _, _, _, outputs, gt = case
    coco_ids = {c["id"] for c in gt["categories"]}
    by_id = sorted(gt["categories"], key=lambda c: c["id"])
    contiguous = {c["name"]: k for k, c in enumerate(by_id, start=1)}
    name_of = {c["id"]: c["name"] for c in gt["categories"]}
    sizes = {i["id"]: (i["width"], i["height"]) for i in gt["images"]}
    annotated = sorted({a["image_id"] for a in gt["annotations"]})
    truth = []
    for annotation in gt["annotations"]:
        label = contiguous[name_of[annotation["category_id"]]]
        if label not in coco_ids:
            continue
        w, h = sizes[annotation["image_id"]]
        x, y, bw, bh = annotation["bbox"]
        truth.append({"id": len(truth) + 1, "image_id": annotation["image_id"], "category_id": label,
                      "bbox": [x / w, y / h, bw / w, bh / h], "area": bw / w * bh / h, "iscrowd": 0})
    results = []
    for image_id in annotated:
        boxes, labels, scores = outputs[image_id]
        for i in range(len(scores)):
            if int(labels[i]) in coco_ids:
                x0, y0, x1, y1 = (float(v) for v in boxes[i])
                results.append({"image_id": image_id, "category_id": int(labels[i]),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[i])})
    categories = [{"id": k, "name": str(k)} for k in range(1, 81) if k in coco_ids]
    data = {"images": [{"id": i} for i in annotated], "annotations": truth, "categories": categories}
    return cocoeval_stats(data, results, annotated, [c["id"] for c in categories])


# Stats that do not depend on object areas: INC recomputes areas from normalized boxes, so
# its APs/APm/APl (3-5) and ARs/ARm/ARl (9-11) are not comparable.
AREA_FREE = [0, 1, 2, 6, 7, 8]


def test_the_inc_dropped_classes_are_the_labels_that_are_not_coco_ids(case):
    gt = case[4]
    coco_ids = {c["id"] for c in gt["categories"]}
    by_id = sorted(gt["categories"], key=lambda c: c["id"])
    dropped = [c["name"] for k, c in enumerate(by_id, start=1) if k not in coco_ids]
    assert dropped == list(INC_DROPPED_CATEGORIES)


@pytest.fixture(scope="module")
def cli_runs(case, tmp_path_factory):
    """metrics.json of `ssd-eval eval --set protocol=P` for each protocol, run as a user would."""
    annotations, images, models, _, _ = case
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "lookup.yaml"
    config.write_text("variant: lookup\n"
                      f"dataset: {{annotations: {annotations}, images: {images}}}\n"
                      f"preprocess: {{input_size: [{INPUT_HW[0]}, {INPUT_HW[1]}]}}\n"
                      f"output: {{dir: '{folder}/results/{{run}}'}}\n")
    runs = {}
    for protocol in sorted(PROTOCOL_PRESETS):
        model = models[PROTOCOL_PRESETS[protocol]["resize_backend"]]
        run = run_cli("eval", "--config", str(config), "--model", str(model), "--set", f"protocol={protocol}",
                      "--no-progress")
        assert run.returncode == 0, run.stderr
        name = "lookup" if protocol == "coco" else f"lookup-{protocol}"
        metrics = json.loads((folder / "results" / name / "metrics.json").read_text())
        metrics["_detections"] = str(folder / "results" / name / "detections.json")
        runs[protocol] = (run, metrics)
    return runs


@pytest.mark.parametrize("protocol", sorted(PROTOCOL_PRESETS))
def test_each_protocol_through_the_cli_matches_plain_pycocotools_with_its_rules(case, cli_runs, protocol):
    run, metrics = cli_runs[protocol]
    assert metrics["protocol"] == protocol
    preset = {k: v for k, v in PROTOCOL_PRESETS[protocol].items() if k != "resize_backend"}
    assert metrics["stats"] == pytest.approx(expected_stats(case, **preset), abs=1e-12)
    assert metrics["mAP"] > 0.1
    assert f"{metrics['mAP']:.4f}" in run.stdout
    annotated = len({a["image_id"] for a in case[4]["annotations"]})
    assert metrics["provenance"]["images"] == (200 if protocol == "coco" else annotated)


def test_inc_protocol_equals_the_label_space_detour(case, cli_runs):
    metrics = cli_runs["inc"][1]
    detour = inc_label_detour_stats(case)
    assert [metrics["stats"][i] for i in AREA_FREE] == pytest.approx([detour[i] for i in AREA_FREE], abs=1e-12)
    # ...and the 71-class mean is not the 80-class one.
    all_classes = expected_stats(case, skip_images_without_annotations=True, crowd_as_ground_truth=True,
                                 max_detections="all", clip_boxes=False)
    assert abs(all_classes[0] - metrics["mAP"]) > 1e-3
    assert len(metrics["categories_averaged"]) == 71


SWITCH_VALUES = [
    ("skip_images_without_annotations", True),
    ("crowd_as_ground_truth", True),
    ("max_detections", "all"),
    ("max_detections", 20),
    ("score_threshold", 0.5),
    ("clip_boxes", False),
    ("exclude_categories", list(INC_DROPPED_CATEGORIES)),
]


@pytest.mark.parametrize("name, value", SWITCH_VALUES)
def test_each_switch_alone_matches_plain_pycocotools_and_changes_the_result(case, cli_runs, tmp_path, name, value):
    coco_stats = cli_runs["coco"][1]["stats"]
    metrics = run_harness(case, tmp_path / "run", **{name: value})
    expected = expected_stats(case, **{name: value})
    assert metrics["stats"] == pytest.approx(expected, abs=1e-12)
    assert metrics["stats"] != pytest.approx(coco_stats, abs=1e-6), f"{name}={value} changed nothing on this case"
    assert metrics["protocol_switches"][name] == value


@pytest.mark.parametrize("backend", ["pil", "opencv"])
def test_resize_backend_matches_an_independent_resize(coco_subset, backend):
    """The model input under each backend equals PIL's bilinear resize / cv2 INTER_LINEAR on uint8, done here."""
    cv2 = pytest.importorskip("cv2")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    with Image.open(next((coco_subset / "images").glob("*.jpg"))) as image:
        rgb = image.convert("RGB")
    if backend == "pil":
        pixels = np.asarray(rgb.resize((120, 100), Image.Resampling.BILINEAR))
    else:
        pixels = cv2.resize(np.asarray(rgb), (120, 100), interpolation=cv2.INTER_LINEAR)
    expected = ((pixels / 255.0 - mean) / std).transpose(2, 0, 1)
    tensor = preprocess(rgb, size_hw=(100, 120), mean=mean, std=std, scale=1 / 255, backend=backend)
    np.testing.assert_allclose(tensor, expected, atol=1e-5)
    other = preprocess(rgb, size_hw=(100, 120), mean=mean, std=std, scale=1 / 255,
                       backend="opencv" if backend == "pil" else "pil")
    assert np.abs(other - tensor).max() > 0.1


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "pycocotools"])
@pytest.mark.parametrize("protocol", sorted(PROTOCOL_PRESETS))
def test_alternative_backends_match_pycocotools_under_each_protocol(case, cli_runs, protocol, backend):
    """Crowd as ignore and as ground truth, empty images skipped or kept, capped and uncapped
    detections, 80 and 71 categories: every backend must give pycocotools' numbers."""
    pytest.importorskip(BACKENDS[backend].module)
    _, metrics = cli_runs[protocol]
    switches = metrics["protocol_switches"]
    detections = json.loads(Path(metrics["_detections"]).read_text())
    gt = case[4]
    annotated = {a["image_id"] for a in gt["annotations"]}
    image_ids = sorted(i["id"] for i in gt["images"]
                       if i["id"] in annotated or not switches["skip_images_without_annotations"])
    scores = score_detections(gt, detections, image_ids, crowd_as_ground_truth=switches["crowd_as_ground_truth"],
                              exclude_categories=switches["exclude_categories"], backend=backend)
    assert scores.stats == pytest.approx(metrics["stats"], abs=1e-9)
    assert scores.per_category_ap == pytest.approx(metrics["per_category_ap"], abs=1e-9)


@pytest.fixture(scope="module")
def scored_at_once(case, cli_runs):
    """protocol -> (its run's detections, image ids, scoring options, plain pycocotools Scores on all at once)."""
    cached = {}

    def score(protocol: str):
        if protocol not in cached:
            switches = cli_runs[protocol][1]["protocol_switches"]
            detections = json.loads(Path(cli_runs[protocol][1]["_detections"]).read_text())
            gt = case[4]
            annotated = {a["image_id"] for a in gt["annotations"]}
            image_ids = sorted(i["id"] for i in gt["images"]
                               if i["id"] in annotated or not switches["skip_images_without_annotations"])
            options = dict(crowd_as_ground_truth=switches["crowd_as_ground_truth"],
                           exclude_categories=switches["exclude_categories"])
            cached[protocol] = (detections, image_ids, options, score_detections(
                gt, detections, image_ids, backend="pycocotools", streaming=False, **options))
        return cached[protocol]

    return score


@pytest.mark.parametrize("backend", ["pycocotools", "hotcoco"])
@pytest.mark.parametrize("protocol", sorted(PROTOCOL_PRESETS))
def test_streaming_scoring_matches_pycocotools_all_at_once_under_each_protocol(case, cli_runs, scored_at_once,
                                                                               protocol, backend):
    """The CLI runs scored streaming (metrics.streaming defaults to true); scoring the same detections
    all at once with plain pycocotools, or streaming with each streaming backend, gives the same
    stats, per-category AP and PR curves under every protocol."""
    pytest.importorskip(BACKENDS[backend].module)
    _, metrics = cli_runs[protocol]
    assert metrics["provenance"]["metrics_streaming"] is True
    detections, image_ids, options, at_once = scored_at_once(protocol)
    streamed = score_detections(case[4], detections, image_ids, backend=backend, streaming=True, **options)
    assert metrics["stats"] == pytest.approx(at_once.stats, abs=1e-12)
    assert streamed.stats == pytest.approx(at_once.stats, abs=1e-9)
    assert streamed.per_category_ap == pytest.approx(at_once.per_category_ap, abs=1e-9)
    for curve, values in at_once.pr_curves.items():
        assert streamed.pr_curves[curve] == pytest.approx(values, abs=1e-9)
        assert metrics["pr_curves"][curve] == pytest.approx(values, abs=1e-9)
