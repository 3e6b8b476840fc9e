"""Tests for ssd_eval.engine.shards: a merge reads the shards' detections one at a time, in image order.

(Merge's coverage, duplicate and manifest checks are in test_pipeline.py and test_faults_pipeline.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ssd_eval.config.load import load_config
from ssd_eval.engine import shards
from ssd_eval.engine.pipeline import evaluate
from ssd_eval.errors import UserError
from ssd_eval.utils import hash_data, sha256_of

from helpers import REAL_SHAPED_IDS, real_shaped_sample

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("split")
    config = load_config(REPO / "configs" / "sample.yaml", [
        ("dataset.annotations", str(SAMPLE / "annotations.json")), ("dataset.images", str(SAMPLE / "images")),
        ("model.path", str(SAMPLE / "models" / "sample.onnx")), ("output.dir", str(out)), ("pipeline.workers", 1)])
    for index in (1, 2):
        evaluate(config, shard=(index, 2), progress=False)
    return [out / f"shard-{index}-of-2" for index in (1, 2)]


def test_merge_streams_the_shards_detections_to_the_scorer_in_image_order(two_shards, tmp_path, monkeypatch):
    from ssd_eval.engine import finish

    seen = {}
    score = finish.score_detections

    def recording(gt, detections, image_ids, **kwargs):
        seen.update(kind=type(detections), streaming=kwargs.get("streaming"))
        detections = list(detections)
        seen["image_order"] = [d["image_id"] for d in detections]
        return score(gt, detections, image_ids, **kwargs)

    monkeypatch.setattr(finish, "score_detections", recording)  # merge scores through engine.finish
    result = shards.merge_shards(two_shards, tmp_path / "merged")
    assert seen["kind"] is not list and seen["streaming"] is True  # an iterator, never every detection at once
    assert seen["image_order"] == sorted(seen["image_order"])
    written = json.loads((tmp_path / "merged" / "detections.json").read_text())
    assert [d["image_id"] for d in written] == seen["image_order"]
    assert result.provenance["detections"] == len(written)


def test_merge_refuses_a_shard_whose_detections_are_out_of_image_order(two_shards, tmp_path):
    first, second = (Path(shutil.copytree(d, tmp_path / d.name)) for d in two_shards)
    detections = json.loads((first / "detections.json").read_text())
    assert len({d["image_id"] for d in detections}) > 1
    reordered = sorted(detections, key=lambda d: -d["image_id"])
    with open(first / "detections.json", "w") as handle:  # the harness's layout, one result per line
        handle.write("[\n" + ",\n".join(json.dumps(d) for d in reordered) + "\n]\n")
    manifest = json.loads((first / "shard.json").read_text())
    manifest["detections_file"]["sha256"] = sha256_of(first / "detections.json")
    (first / "shard.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"shard-1-of-2/detections.json: detections are not in ascending image order"):
        shards.merge_shards([first, second], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()



def test_merge_refuses_to_write_into_one_of_its_shard_folders(two_shards, tmp_path):
    first, second = (Path(shutil.copytree(d, tmp_path / d.name)) for d in two_shards)
    before = {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()}
    with pytest.raises(UserError, match=r"shard-1-of-2: is a shard folder \(it holds shard.json\)"):
        shards.merge_shards([first, second], first)
    assert {p.name: p.read_bytes() for p in first.iterdir() if p.is_file()} == before  # the shard is intact
    shards.merge_shards([first, second], tmp_path / "merged")  # and still merges


def test_a_merged_subset_run_records_the_subset_as_a_single_run_does(tmp_path):
    config = load_config(REPO / "configs" / "sample.yaml", [
        ("dataset.annotations", str(SAMPLE / "annotations.json")), ("dataset.images", str(SAMPLE / "images")),
        ("model.path", str(SAMPLE / "models" / "sample.onnx")), ("output.dir", str(tmp_path / "split")),
        ("pipeline.workers", 1), ("dataset.subset", "sample-4")])
    for index in (1, 2):
        evaluate(config, shard=(index, 2), progress=False)
    merged = shards.merge_shards([tmp_path / "split" / f"shard-{i}-of-2" for i in (1, 2)], tmp_path / "merged")
    single = evaluate(load_config(REPO / "configs" / "sample.yaml", [
        ("dataset.annotations", str(SAMPLE / "annotations.json")), ("dataset.images", str(SAMPLE / "images")),
        ("model.path", str(SAMPLE / "models" / "sample.onnx")), ("output.dir", str(tmp_path / "single")),
        ("pipeline.workers", 1), ("dataset.subset", "sample-4")]), progress=False)
    assert merged.provenance["subset"] == single.provenance["subset"]
    assert merged.provenance["subset"]["algorithm"] == "stratified-greedy-l1/v1"
    assert merged.provenance["bootstrap"]["full_set_off"] == single.provenance["bootstrap"]["full_set_off"]


# ------------------------------------------------------------------ real-shaped ids, reversed shards, edited files
# (issue 23) Real val2017 ids run from 139 to 581781: ids of 3 to 6 digits order differently as strings.


def real_shaped_config(annotations: Path, images: Path, out: Path):
    return load_config(REPO / "configs" / "sample.yaml", [
        ("dataset.annotations", str(annotations)), ("dataset.images", str(images)),
        ("model.path", str(SAMPLE / "models" / "sample.onnx")), ("output.dir", str(out)), ("pipeline.workers", 1)])


@pytest.fixture(scope="module")
def real_shaped_runs(tmp_path_factory) -> tuple[Path, list[Path]]:
    """(single run folder, [shard 1/2, shard 2/2]) of the sample renumbered to real val2017 ids of 3 to 6 digits."""
    root = tmp_path_factory.mktemp("real-shaped")
    annotations, images = real_shaped_sample(root / "coco", SAMPLE)
    evaluate(real_shaped_config(annotations, images, root / "single"), progress=False)
    for index in (1, 2):
        evaluate(real_shaped_config(annotations, images, root / "split"), shard=(index, 2), progress=False)
    return root / "single", [root / "split" / f"shard-{index}-of-2" for index in (1, 2)]


def test_merged_ids_of_every_length_are_the_single_runs_image_set(real_shaped_runs, tmp_path):
    single_dir, shard_dirs = real_shaped_runs
    single = json.loads((single_dir / "metrics.json").read_text())
    merged = shards.merge_shards(shard_dirs, tmp_path / "merged")
    assert single["provenance"]["image_ids_sha256"] == hash_data(REAL_SHAPED_IDS)  # ascending as numbers
    assert merged.provenance["image_ids_sha256"] == single["provenance"]["image_ids_sha256"]
    assert merged.provenance["images"] == len(REAL_SHAPED_IDS) and merged.scores.stats == single["stats"]


def test_shards_given_in_reverse_order_merge_to_the_single_runs_files(real_shaped_runs, tmp_path):
    single_dir, shard_dirs = real_shaped_runs
    merged = shards.merge_shards(shard_dirs[::-1], tmp_path / "merged")
    assert (tmp_path / "merged" / "detections.json").read_bytes() == (single_dir / "detections.json").read_bytes()
    single = json.loads((single_dir / "metrics.json").read_text())
    assert merged.scores.stats == single["stats"] and merged.intervals == single["intervals"]
    assert merged.provenance["image_ids_sha256"] == single["provenance"]["image_ids_sha256"]
    assert merged.provenance["shards"] == ["1/2", "2/2"]


def test_merge_refuses_shards_whose_annotation_file_was_edited_after_them(tmp_path):
    """A ground-truth box corrected between `eval --shard` and `merge`: scoring against the new file while
    metrics.json records the shards' sha256 would be a wrong mAP without a word."""
    annotations, images = real_shaped_sample(tmp_path / "coco", SAMPLE)
    for index in (1, 2):
        evaluate(real_shaped_config(annotations, images, tmp_path / "split"), shard=(index, 2), progress=False)
    gt = json.loads(annotations.read_text())
    x, y, w, h = gt["annotations"][0]["bbox"]
    gt["annotations"][0]["bbox"] = [x + w / 2, y, w, h]  # the box moved by half its width
    annotations.write_text(json.dumps(gt))
    with pytest.raises(UserError) as caught:
        shards.merge_shards([tmp_path / "split" / f"shard-{i}-of-2" for i in (1, 2)], tmp_path / "merged")
    assert str(caught.value) == f"{annotations}: changed since the shards were made (sha256 differs)"
    assert not (tmp_path / "merged").exists()
def test_a_second_merge_into_the_folder_is_refused_until_metrics_json_is_written(two_shards, tmp_path, monkeypatch):
    """Issue 22 item 4: merge holds the output folder's lock from its first file to its last (and through
    ``finish``, where tracking rewrites metrics.json)."""
    from ssd_eval.engine import finish

    target = tmp_path / "merged"
    refusals = []
    breakdown = finish.breakdown_for_run

    def in_the_window(*args, **kwargs):  # detections.json is written, metrics.json is not yet
        if not refusals:  # the first merge's window only (a second merge let in would come here too)
            refusals.append("(the second merge was let in)")
            with pytest.raises(UserError) as refused:
                shards.merge_shards(two_shards, target)
            refusals[0] = str(refused.value)
        return breakdown(*args, **kwargs)

    def on_result(result):
        with pytest.raises(UserError) as refused:
            evaluate(load_config(REPO / "configs" / "sample.yaml", [("output.dir", str(target))]), progress=False)
        refusals.append(str(refused.value))

    monkeypatch.setattr(finish, "breakdown_for_run", in_the_window)  # called between the two files
    result = shards.merge_shards(two_shards, target, on_result=on_result)
    assert refusals == [f"{target}: another run is using this output directory; wait for it to finish or choose "
                        "another --out"] * 2
    written = json.loads((target / "detections.json").read_text())
    assert result.provenance["detections"] == len(written) == json.loads(
        (target / "metrics.json").read_text())["provenance"]["detections"]
    assert not (target / "cache.jsonl").exists()


def test_merge_of_the_shards_out_folder_finds_its_shards_or_names_the_splits(tmp_path, capsys):
    """Issue 25: `eval --shard i/n --out DIR` then `merge DIR` works; DIR with shard folders of two splits (an older
    shard-*-of-3 beside shard-*-of-2) is an error naming both, as is a folder without shards."""
    from ssd_eval.cli import main

    out = tmp_path / "out"
    for index in (1, 2):
        assert main(["eval", "--config", "sample", "--shard", f"{index}/2", "--out", str(out), "--no-progress",
                     "--set", "metrics.bootstrap.replicates=0"]) == 0
    assert f"score them with 'ssd-eval merge {out}'" in capsys.readouterr().out
    assert main(["merge", str(out)]) == 0
    merged = json.loads((out / "metrics.json").read_text())
    assert merged["provenance"]["shards"] == ["1/2", "2/2"] and merged["provenance"]["images"] == 8
    capsys.readouterr()

    (out / "shard-1-of-3").mkdir()
    assert main(["merge", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"ssd-eval: error: merge: {out} holds shards of 2 splits: 2 of 2 ({out}/shard-*-of-2); 1 of 3 "
                     f"({out}/shard-*-of-3); name the folders of one split, and remove the other's")
    assert main(["merge", str(tmp_path)]) == 2
    assert "is neither a shard's output" in capsys.readouterr().err
