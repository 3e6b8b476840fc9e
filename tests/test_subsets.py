"""Named stratified subsets: known answers on synthetic sets, determinism, properties on real val2017 annotations,
the subset file format and its refusals, and the command-line tool."""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssd_eval.data.subsets import (
    ALGORITHM,
    SUBSETS_DIR,
    Subset,
    ids_sha256,
    main,
    make_subset,
    read_subset,
    stratified_subset,
    subset_path,
    write_subset,
)
from ssd_eval.errors import UserError
from ssd_eval.testing.wrappers import load_subset

from conftest import run_cli
from helpers import real_shaped_sample

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ANNOTATIONS = ROOT / "data" / "sample" / "annotations.json"

# sha256 of stratified_subset(real subset annotations, 50, seed=0), as ids_sha256 writes it. Computed once by
# this code: it pins cross-machine determinism, not correctness (the property tests below check that).
REAL_50_IDS_SHA256 = "70f511c04113f87a633a897b6c178c394410f43275e0b5c74e2ee38d051d4c31"


def synthetic_gt(groups: list[tuple[int, list[int]]]) -> dict:
    """A COCO dict: for each (count, category ids) group, ``count`` images annotated with those categories."""
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 10)]}
    image_id = 1000
    for count, categories in groups:
        for _ in range(count):
            image_id += 7
            gt["images"].append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 10, "height": 10})
            for category in categories:
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                          "category_id": category, "bbox": [1, 1, 2, 2]})
    return gt


def images_by_category(gt: dict) -> dict[int, set[int]]:
    found = collections.defaultdict(set)
    for ann in gt["annotations"]:
        found[ann["category_id"]].add(ann["image_id"])
    return found


def test_single_label_strata_get_exactly_their_share():
    # 50 % category 1, 30 % category 2, 20 % unannotated; the first 10 ids would all be category 1.
    gt = synthetic_gt([(50, [1]), (30, [2]), (20, [])])
    ids = stratified_subset(gt, 10)
    strata = images_by_category(gt)
    assert len(ids) == 10
    assert len(set(ids) & strata[1]) == 5
    assert len(set(ids) & strata[2]) == 3
    assert len(set(ids) - strata[1] - strata[2]) == 2
    first_ten = sorted(i["id"] for i in gt["images"])[:10]
    assert set(first_ten) <= strata[1]


def test_a_rare_category_is_included_and_multi_label_images_count_for_each_category():
    # 60 images of category 1, 30 of categories 1 and 2, 9 of category 3, 1 of category 4 (0.1 image at size 10).
    gt = synthetic_gt([(60, [1]), (30, [1, 2]), (9, [3]), (1, [4])])
    ids = set(stratified_subset(gt, 10))
    strata = images_by_category(gt)
    assert len(ids & strata[4]) == 1  # raised to 1: every category appears when the size allows
    assert len(ids & strata[3]) == 1  # 0.9
    assert len(ids & strata[2]) == 3  # 3.0
    assert len(ids & strata[1]) == 8  # 9.0 wanted, but two images went to the rare categories


def test_same_ids_whatever_the_order_of_the_file_and_twice_in_a_row():
    gt = synthetic_gt([(40, [1]), (25, [1, 2]), (20, [2, 3]), (10, [5]), (5, [])])
    reference = stratified_subset(gt, 17, seed=3)
    assert stratified_subset(gt, 17, seed=3) == reference
    shuffled = copy.deepcopy(gt)
    generator = random.Random(1)
    generator.shuffle(shuffled["images"])
    generator.shuffle(shuffled["annotations"])
    assert stratified_subset(shuffled, 17, seed=3) == reference
    assert reference == sorted(set(reference))


def test_the_seed_only_breaks_ties():
    gt = synthetic_gt([(100, [1])])  # every image is equivalent: the choice is all tie-break
    subsets = {tuple(stratified_subset(gt, 5, seed=seed)) for seed in range(4)}
    assert len(subsets) == 4
    assert stratified_subset(gt, 5, seed=2) == stratified_subset(gt, 5, seed=2)


@pytest.mark.parametrize("size", [0, -1, 101])
def test_a_size_outside_the_file_is_refused(size):
    with pytest.raises(UserError, match="between 1 and the 100 images"):
        stratified_subset(synthetic_gt([(100, [1])]), size)


def test_the_whole_file_is_every_image():
    gt = synthetic_gt([(7, [1]), (3, [])])
    assert stratified_subset(gt, 10) == sorted(i["id"] for i in gt["images"])


def test_real_subset_of_50_is_pinned_and_stratified(coco_subset):
    gt = json.loads((coco_subset / "annotations.json").read_text())
    size = 50
    ids = stratified_subset(gt, size)
    assert ids_sha256(ids) == REAL_50_IDS_SHA256
    all_ids = [i["id"] for i in gt["images"]]
    total = len(all_ids)
    assert len(ids) == size and len(set(ids)) == size and set(ids) <= set(all_ids)
    strata = images_by_category(gt)
    chosen = set(ids)
    # 80 categories with ground truth: 50 images can hold them all, and do.
    assert len(strata) == 80 and all(strata[c] & chosen for c in strata)
    # Each category within 3 images of its target max(1, size * share); unannotated images in proportion (0.5 -> 1).
    for category, images in strata.items():
        target = max(1.0, size * len(images) / total)
        assert abs(len(images & chosen) - target) <= 3, category
    unannotated = set(all_ids) - set().union(*strata.values())
    assert len(unannotated & chosen) == 1

    def deviation(subset) -> float:  # sum over categories of |images in subset - size * share|
        members = set(int(i) for i in subset)
        return sum(abs(len(images & members) - size * len(images) / total) for images in strata.values())

    generator = np.random.default_rng(0)
    random_deviations = [deviation(generator.choice(all_ids, size, replace=False)) for _ in range(200)]
    assert deviation(ids) < deviation(sorted(all_ids)[:size])  # the first 50 ids
    assert deviation(ids) < np.percentile(random_deviations, 5)  # better than 95 % of random draws


def test_write_read_load_round_trip(tmp_path):
    subset = make_subset(SAMPLE_ANNOTATIONS, 4, name="sample-4")
    path = write_subset(tmp_path / "s.json", subset)
    assert read_subset(path) == subset
    sha = hashlib.sha256(SAMPLE_ANNOTATIONS.read_bytes()).hexdigest()
    assert load_subset(path, sha) == subset.image_ids
    assert set(json.loads(path.read_text())) == {"name", "annotations_sha256", "image_ids", "ids_sha256",
                                                  "algorithm", "seed"}


def test_the_committed_sample_subset_is_what_the_tool_makes():
    sha = hashlib.sha256(SAMPLE_ANNOTATIONS.read_bytes()).hexdigest()
    path = subset_path("sample-4")
    assert path == ROOT / "subsets" / "sample-4.json"
    assert load_subset(path, sha) == make_subset(SAMPLE_ANNOTATIONS, 4, name="sample-4").image_ids
    assert read_subset(path).algorithm == ALGORITHM


def _refusal(path: Path, sha: str = "0" * 64) -> str:
    with pytest.raises(UserError) as caught:
        load_subset(path, sha)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def test_load_refuses_edited_ids_other_annotations_and_broken_files(tmp_path):
    subset = make_subset(SAMPLE_ANNOTATIONS, 4, name="sample-4")
    good = write_subset(tmp_path / "good.json", subset)
    assert "not this one" in _refusal(good)  # another annotation file
    data = subset.to_json()
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(dict(data, image_ids=data["image_ids"][:-1])))
    assert "do not match ids_sha256" in _refusal(edited, subset.annotations_sha256)
    unsorted = tmp_path / "unsorted.json"
    unsorted.write_text(json.dumps(dict(data, image_ids=data["image_ids"][::-1])))
    assert "ascending" in _refusal(unsorted, subset.annotations_sha256)
    lacking = tmp_path / "lacking.json"
    lacking.write_text(json.dumps({k: v for k, v in data.items() if k != "ids_sha256"}))
    assert "lacks 'ids_sha256'" in _refusal(lacking, subset.annotations_sha256)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert "invalid JSON" in _refusal(broken)
    assert "not found" in _refusal(tmp_path / "absent.json")


def test_write_refuses_ids_that_do_not_match_their_hash(tmp_path):
    with pytest.raises(ValueError):
        write_subset(tmp_path / "x.json", Subset("x", "0" * 64, [3, 1], ids_sha256([1, 3])))


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "ci 500"])
def test_subset_names_are_plain_file_names(name):
    with pytest.raises(UserError, match="subset name"):
        subset_path(name)


def test_subset_path_is_under_the_repository_subsets_folder():
    assert subset_path("ci-500") == SUBSETS_DIR / "ci-500.json" == ROOT / "subsets" / "ci-500.json"


def test_command_line_writes_keeps_and_refuses_to_replace(tmp_path, capsys):
    out = tmp_path / "ci-4.json"
    args = ["--annotations", str(SAMPLE_ANNOTATIONS), "--size", "4", "--name", "ci-4", "--out", str(out)]
    assert main(args) == 0
    first = out.read_text()
    assert main(args) == 0 and out.read_text() == first  # same subset again: nothing changes
    assert main([*args[:3], "5", *args[4:]]) == 2  # another list under the same name
    assert "already has this file" in capsys.readouterr().err
    assert main([*args[:3], "5", *args[4:], "--force"]) == 0
    assert len(read_subset(out).image_ids) == 5
    assert main(["--annotations", str(tmp_path / "none.json"), "--size", "4", "--name", "x",
                 "--out", str(tmp_path / "x.json")]) == 2


def test_module_entry_point_on_the_real_subset(coco_subset, tmp_path):
    out = tmp_path / "ci-50.json"
    done = subprocess.run([sys.executable, "-m", "ssd_eval.data.subsets", "--annotations",
                           str(coco_subset / "annotations.json"), "--size", "50", "--name", "ci-50",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    subset = read_subset(out)
    assert subset.ids_sha256 == REAL_50_IDS_SHA256 and subset.name == "ci-50" and subset.seed == 0
    assert subset.annotations_sha256 == hashlib.sha256((coco_subset / "annotations.json").read_bytes()).hexdigest()


# --------------------------------------------------------------------------- wired into runs (dataset.subset)


def test_select_image_ids_keeps_exactly_the_subset_then_the_protocol_and_the_shard():
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.data.subsets import select_image_ids

    dataset = load_annotations(SAMPLE_ANNOTATIONS, ROOT / "data" / "sample" / "images")
    assert select_image_ids(dataset, subset="sample-4") == [285, 776, 802, 872]
    assert 802 not in dataset.annotated_image_ids  # the sample image without annotations
    assert select_image_ids(dataset, subset="sample-4", skip_images_without_annotations=True) == [285, 776, 872]
    halves = [select_image_ids(dataset, subset="sample-4", shard=(i, 2)) for i in (1, 2)]
    assert halves == [[285, 776], [802, 872]]
    assert select_image_ids(dataset, subset=str(subset_path("sample-4"))) == [285, 776, 802, 872]


def test_a_subset_file_given_as_a_path_must_be_named_after_its_subset(tmp_path):
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.data.subsets import open_subset, select_image_ids, subset_run_name

    dataset = load_annotations(SAMPLE_ANNOTATIONS, ROOT / "data" / "sample" / "images")
    good = write_subset(tmp_path / "ci-3.json", make_subset(SAMPLE_ANNOTATIONS, 3, name="ci-3"))
    assert select_image_ids(dataset, subset=str(good)) == read_subset(good).image_ids
    assert open_subset(str(good), dataset.sha256).name == subset_run_name(str(good)) == "ci-3"
    renamed = tmp_path / "other.json"
    renamed.write_text(good.read_text())
    with pytest.raises(UserError, match="must be named after its subset"):
        select_image_ids(dataset, subset=str(renamed))


def test_a_subset_of_another_annotation_file_is_refused_naming_the_file(tmp_path):
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.data.subsets import select_image_ids

    from helpers import write_coco

    annotations, images = write_coco(tmp_path, [{"id": 285, "width": 20, "height": 20}], [])
    with pytest.raises(UserError) as caught:
        select_image_ids(load_annotations(annotations, images), subset="sample-4")
    assert str(subset_path("sample-4")) in str(caught.value) and "\n" not in str(caught.value)


def test_config_names_the_subset_in_the_run_folder_and_refuses_bad_names_and_limits():
    from ssd_eval.config.load import load_config
    from ssd_eval.config.schema import run_name

    config = load_config(ROOT / "configs" / "sample.yaml", [("dataset.subset", "sample-4")])
    assert config.subset_name == "sample-4" and str(config.out_dir) == "results/sample@sample-4"
    assert run_name("ssd-12", "inc", "ci-500") == "ssd-12-inc@ci-500" and run_name("ssd-12", "coco") == "ssd-12"
    path_config = load_config(ROOT / "configs" / "sample.yaml", [("dataset.subset", "elsewhere/ci-9.json")])
    assert path_config.subset_name == "ci-9"
    with pytest.raises(UserError, match="dataset.subset.*subset name"):
        load_config(ROOT / "configs" / "sample.yaml", [("dataset.subset", "ci 500")])
    with pytest.raises(UserError, match="dataset.limit"):
        load_config(ROOT / "configs" / "sample.yaml", [("dataset.subset", "sample-4"), ("dataset.limit", 2)])
    with pytest.raises(UserError, match="metrics.bootstrap.level"):
        load_config(ROOT / "configs" / "sample.yaml", [("metrics.bootstrap.level", 1.5)])
    with pytest.raises(UserError, match="metrics.bootstrap.replicates"):
        load_config(ROOT / "configs" / "sample.yaml", [("metrics.bootstrap.replicates", -1)])


def test_a_random_subset_is_the_images_with_the_lowest_seeded_hashes():
    from ssd_eval.data.subsets import random_subset

    gt = {"images": [{"id": i} for i in (5, 17, 3, 42, 8, 99, 23)], "annotations": [], "categories": []}

    def key(seed, image_id):  # the documented rule, written out
        return int.from_bytes(hashlib.sha256(f"ssd-eval-subset:{seed}:{image_id}".encode()).digest()[:8], "big")

    for seed in (0, 1, 7):
        expected = sorted(sorted((i["id"] for i in gt["images"]), key=lambda i: key(seed, i))[:3])
        assert random_subset(gt, 3, seed=seed) == expected
    assert len({tuple(random_subset(gt, 3, seed=s)) for s in range(6)}) > 1  # the seed matters
    with pytest.raises(UserError, match="between 1 and the 7 images"):
        random_subset(gt, 8)


def test_make_subset_records_its_algorithm(tmp_path):
    from ssd_eval.data.subsets import ALGORITHM, RANDOM_ALGORITHM, make_subset

    annotations = SAMPLE_ANNOTATIONS
    assert make_subset(annotations, 4, name="s").algorithm == ALGORITHM
    drawn = make_subset(annotations, 4, name="r", algorithm="random", seed=3)
    assert drawn.algorithm == RANDOM_ALGORITHM and drawn.seed == 3 and len(drawn.image_ids) == 4
    with pytest.raises(UserError, match="subset algorithm must be one of stratified, random"):
        make_subset(annotations, 4, name="x", algorithm="greedy")


def test_a_random_subset_whose_ids_are_not_its_draw_is_refused(tmp_path):
    from ssd_eval.config.load import load_config
    from ssd_eval.data.coco import load_annotations
    from ssd_eval.data.subsets import ids_sha256, make_subset, write_subset
    from ssd_eval.engine.finish import subset_record

    drawn = make_subset(SAMPLE_ANNOTATIONS, 4, name="r4", algorithm="random", seed=3)
    path = write_subset(tmp_path / "r4.json", drawn)
    dataset = load_annotations(SAMPLE_ANNOTATIONS, ROOT / "data" / "sample" / "images")
    config = load_config(ROOT / "configs" / "sample.yaml", [("dataset.subset", str(path), "test")])
    assert subset_record(config, dataset)["algorithm"] == "random-sha256/v1"
    others = sorted(set(dataset.images) - set(drawn.image_ids))[:1] + drawn.image_ids[1:]
    edited = dict(drawn.to_json(), image_ids=sorted(others), ids_sha256=ids_sha256(sorted(others)))
    path.write_text(json.dumps(edited))
    with pytest.raises(UserError, match=r"r4.json: says random-sha256/v1 with seed 3, but its ids are not that draw"):
        subset_record(config, dataset)


# --------------------------------------------------------------------------- a repeated id (issue 23)


@pytest.mark.parametrize("ids", [[139, 802, 5001, 10764, 10764, 577539], [577539, 139, 802, 577539]],
                         ids=["ascending", "unsorted"])
def test_a_subset_file_listing_an_image_twice_is_refused_naming_the_id(tmp_path, ids):
    """Its ids_sha256 hashes the list as it is (repeat included), so only the repeat itself can refuse it."""
    path = tmp_path / "ci-6.json"
    path.write_text(json.dumps(Subset("ci-6", "0" * 64, ids, ids_sha256(ids)).to_json()))
    repeated = next(i for i in ids if ids.count(i) > 1)
    assert f"image id {repeated} appears more than once in image_ids" in _refusal(path)


def test_eval_of_a_subset_listing_an_image_twice_is_one_line_and_exit_2(tmp_path):
    """On real-shaped ids: accepted, the repeated image would be inferred and scored twice (mAP and count off)."""
    annotations, images = real_shaped_sample(tmp_path / "coco", ROOT / "data" / "sample")
    subset = make_subset(annotations, 4, name="ci-5")
    ids = sorted([*subset.image_ids, subset.image_ids[-1]])  # the last id twice, the list still ascending
    path = tmp_path / "ci-5.json"
    path.write_text(json.dumps(dict(subset.to_json(), image_ids=ids, ids_sha256=ids_sha256(ids))))
    out = tmp_path / "out"
    done = run_cli("eval", "--config", str(ROOT / "configs" / "sample.yaml"), "--subset", str(path),
                   "--set", f"dataset.annotations={annotations}", "--set", f"dataset.images={images}",
                   "--set", f"output.dir={out}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"ssd-eval: error: {path}: image id {subset.image_ids[-1]} appears more than once in image_ids (it would be "
        "inferred and scored twice); each image must be listed once"]
    assert not out.exists()
