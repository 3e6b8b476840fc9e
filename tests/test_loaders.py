"""Tests for ssd_eval.loaders: the one YAML reader (configs, baselines, --set values) and the subset JSON reader
refuse a key given twice, with one line naming the file, the key and both lines; through the CLI too (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ssd_eval.errors import UserError
from ssd_eval.loaders import load_json, load_yaml

from conftest import ROOT, run_cli


@pytest.mark.parametrize("text", ["a: 1\nb: [1, 2]\nc: {d: null}\n", "x: &a {p: 1}\ny:\n  <<: *a\n  p: 2\n", "",
                                  "- 1\n"])
def test_load_yaml_reads_what_safe_load_reads(text):
    assert load_yaml(text, "f.yaml") == yaml.safe_load(text)


@pytest.mark.parametrize("text, key, lines", [
    ("variant: a\npostprocess:\n  score_threshold: 0.1\nruntime: {}\npostprocess:\n  max_detections: 5\n",
     "postprocess", (2, 5)),
    ("metrics:\n  mAP: {expected: 0.6, expected: 0.531605, abs_tol: 0.002}\n", "expected", (2, 2)),
    ("a:\n  b:\n    c: 1\n    c: 2\n", "c", (3, 4)),
    ("1: a\n1: b\n", 1, (1, 2)),
], ids=["postprocess", "flow-mapping", "nested", "int-key"])
def test_a_yaml_key_given_twice_names_the_file_the_key_and_both_lines(text, key, lines):
    with pytest.raises(UserError) as caught:
        load_yaml(text, "configs/x.yaml")
    assert str(caught.value) == (f"configs/x.yaml: duplicate key {key!r} (line {lines[0]} and line {lines[1]}); "
                                 "YAML keeps only the last, so delete one")


def test_a_json_key_given_twice_names_the_file_the_key_and_both_lines():
    assert load_json('{"a": {"b": 1}, "b": [1]}', "s.json") == {"a": {"b": 1}, "b": [1]}
    with pytest.raises(UserError) as caught:
        load_json('{\n "name": "x",\n "seed": 0,\n "name": "y"\n}', "subsets/x.json")
    assert str(caught.value) == ("subsets/x.json: duplicate key 'name' (line 2 and line 4); JSON readers keep only "
                                 "the last, so delete one")


def _one_error_line(done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    return line


def test_a_config_with_two_postprocess_blocks_is_exit_2_and_one_line(tmp_path):
    """Issue 21: it used to drop one block silently and still label the run coco."""
    config = tmp_path / "two.yaml"
    config.write_text(f"extends: {ROOT / 'configs' / 'sample.yaml'}\npostprocess:\n  score_threshold: 0.5\n"
                      "postprocess:\n  max_detections: 5\n")
    line = _one_error_line(run_cli("eval", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"))
    assert line == (f"ssd-eval: error: {config}: duplicate key 'postprocess' (line 2 and line 4); YAML keeps only the "
                    "last, so delete one")
    assert not (tmp_path / "out").exists()


def test_a_baseline_with_a_key_twice_is_exit_2_and_one_line(tmp_path):
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    text = (ROOT / "baselines" / "sample.yaml").read_text().replace("{expected: 0.531605,",
                                                                    "{expected: 0.6, expected: 0.531605,")
    (baselines / "sample.yaml").write_text(text)
    line = _one_error_line(run_cli("gate", "--baselines", str(baselines), "--results", str(tmp_path)))
    assert line.startswith(f"ssd-eval gate: error: {baselines / 'sample.yaml'}: duplicate key 'expected' (line ")


def test_a_subset_file_with_a_key_twice_is_exit_2_and_one_line(tmp_path):
    subset = json.loads((ROOT / "subsets" / "sample-4.json").read_text())
    text = json.dumps(subset, indent=1).replace('"seed": 0', '"seed": 0,\n "name": "sample-5"')
    path = tmp_path / "sample-4.json"
    path.write_text(text)
    line = _one_error_line(run_cli("eval", "--config", "configs/sample.yaml", "--subset", str(path), "--out",
                                   str(tmp_path / "out"), "--no-progress"))
    assert line == (f"ssd-eval: error: {path}: duplicate key 'name' (line 2 and line 13); JSON readers keep only the "
                    "last, so delete one")


def test_a_set_value_with_a_key_twice_is_an_error(tmp_path):
    from ssd_eval.config.load import parse_override

    with pytest.raises(UserError, match=r"--set postprocess: duplicate key 'max_detections' \(line 1 and line 1\)"):
        parse_override("postprocess={max_detections: 5, max_detections: 6}")


def test_every_yaml_reader_of_the_package_goes_through_load_yaml():
    """One YAML reader: no module but ssd_eval/loaders.py calls PyYAML's loaders itself."""
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "ssd_eval").glob("*.py"))
                 if path.name != "loaders.py" and any(call in path.read_text() for call in
                                                       ("yaml.safe_load", "yaml.load(", "yaml.full_load",
                                                        "yaml.unsafe_load", "SafeLoader"))]
    assert offenders == []
    assert Path(ROOT / "ssd_eval" / "loaders.py").is_file()
