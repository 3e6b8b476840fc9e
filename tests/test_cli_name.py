"""`eval --name NAME` end to end through the CLI: your own model on your own data as a variant of its own,
written to results/NAME/, shown in the table, baselined and gated; names that cannot work refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ssd_eval.cli import main

from conftest import run_cli
from helpers import fixed_detector

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


@pytest.fixture
def own(tmp_path):
    """A model and a COCO-format set that are the user's own (copies of the sample's, elsewhere)."""
    shutil.copytree(SAMPLE / "images", tmp_path / "my-images")
    shutil.copy(SAMPLE / "annotations.json", tmp_path / "my-annotations.json")
    shutil.copy(SAMPLE / "models" / "sample-int8.onnx", tmp_path / "my-detector.onnx")
    return {"model": tmp_path / "my-detector.onnx", "annotations": tmp_path / "my-annotations.json",
            "images": tmp_path / "my-images", "results": tmp_path / "results", "baselines": tmp_path / "baselines"}


def own_eval(own, *extra: str):
    return run_cli("eval", "--model", str(own["model"]), "--annotations", str(own["annotations"]),
                   "--images", str(own["images"]), "--out", str(own["results"]) + "/{run}", "--no-progress", *extra)


@pytest.mark.slow
def test_a_named_run_is_a_variant_in_the_table_and_gated_once_baselined(own):
    run = own_eval(own, "--name", "my-detector")
    assert run.returncode == 0, run.stderr
    folder = own["results"] / "my-detector"  # not my-detector@model-...@annotations-...@images-...
    assert [p.name for p in own["results"].iterdir()] == ["my-detector"]
    document = json.loads((folder / "metrics.json").read_text())
    assert document["variant"] == "my-detector"
    provenance = document["provenance"]
    assert provenance["partial"] == []
    assert provenance["name"] == {"from": "--name", "config_file": "configs/sample.yaml",
                                  "overridden": {"model.path": str(own["model"]),
                                                 "dataset.annotations": str(own["annotations"]),
                                                 "dataset.images": str(own["images"])}}

    table = run_cli("table", "--results", str(own["results"]))
    assert table.returncode == 0, table.stderr
    assert any(line.startswith("my-detector ") for line in table.stdout.splitlines()), table.stdout

    ungated = run_cli("gate", "--results", str(own["results"]), "--baselines", str(own["baselines"]),
                      "--variant", "my-detector")
    assert ungated.returncode == 2, ungated.stdout  # no baseline yet: it cannot be gated
    update = run_cli("baseline", "--update", "--variant", "my-detector", "--results", str(own["results"]),
                     "--baselines", str(own["baselines"]))
    assert update.returncode == 0, update.stderr
    assert (own["baselines"] / "my-detector.yaml").is_file()
    gate = run_cli("gate", "--results", str(own["results"]), "--baselines", str(own["baselines"]),
                   "--variant", "my-detector")
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "PASS my-detector mAP" in gate.stdout
    assert gate.stdout.strip().splitlines()[-1].startswith("gate verdict: PASS")

    # the same name, run again with a worse model: the gate catches it
    worse = fixed_detector(own["model"].parent / "worse.onnx", [[0.1, 0.1, 0.2, 0.2]], [1], [0.9])
    rerun = own_eval(own, "--name", "my-detector", "--model", str(worse), "--fresh")
    assert rerun.returncode == 0, rerun.stderr
    regressed = run_cli("gate", "--results", str(own["results"]), "--baselines", str(own["baselines"]),
                        "--variant", "my-detector")
    assert regressed.returncode == 1, regressed.stdout + regressed.stderr


@pytest.mark.slow
def test_a_named_run_stays_named_through_jobs(own):
    run = own_eval(own, "--name", "mine", "--jobs", "2")
    assert run.returncode == 0, run.stderr
    document = json.loads((own["results"] / "mine" / "metrics.json").read_text())
    assert document["variant"] == "mine" and document["provenance"]["partial"] == []
    assert document["provenance"]["name"]["from"] == "--name"
    assert sorted(p.name for p in (own["results"] / "mine").glob("shard-*")) == ["shard-1-of-2", "shard-2-of-2"]


def test_without_a_name_your_own_model_is_a_partial_run(own, capsys):
    status = main(["eval", "--model", str(own["model"]), "--limit", "1", "--out", str(own["results"]) + "/{run}",
                   "--no-progress", "--set", "metrics.bootstrap.replicates=0"])
    assert status == 0
    [folder] = own["results"].iterdir()
    assert folder.name.startswith("sample@limit1@model-")


@pytest.mark.parametrize("name,needle", [
    ("sample-int8", "configs/sample-int8.yaml is that variant already"),  # would pass for the config's variant
    ("a@b", "a variant name is letters, digits"),
    ("../up", "a variant name is letters, digits"),
    ("-x", "a variant name is letters, digits"),
])
def test_names_that_cannot_be_a_variant_are_refused_before_any_work(own, capsys, name, needle):
    status = main(["eval", "--model", str(own["model"]), f"--name={name}", "--out", str(own["results"]) + "/{run}",
                   "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert error.startswith(f"ssd-eval: error: --name {name}") and needle in error and "\n" not in error
    assert not own["results"].exists()
