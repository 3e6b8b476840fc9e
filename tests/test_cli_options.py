"""The command line's shared options (issue 25): --version, --protocol, a variant name or a config path alike
in every subcommand (config.load.config_path), baseline's help, make eval NAME=."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssd_eval.cli import main
from ssd_eval.cli.commands import eval_overrides
from ssd_eval.cli.parser import build_parser
from ssd_eval.config.load import config_path, load_config
from ssd_eval.errors import UserError
from ssd_eval.results.result import EvalResult
from ssd_eval.results.summary import render_result
from ssd_eval.utils import package_version

from helpers import metrics_document

REPO = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"ssd-eval {package_version('ssd_eval')}"


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_protocol_is_short_for_set_protocol(command):
    parser = build_parser()
    short = parser.parse_args([command, "--protocol", "inc", "--set", "runtime.batch_size=2"])
    long = parser.parse_args([command, "--set", "runtime.batch_size=2", "--set", "protocol=inc"])
    if command == "eval":
        one, two = (load_config(REPO / "configs" / "sample.yaml", eval_overrides(a)) for a in (short, long))
    else:
        from ssd_eval.cli.commands import set_overrides

        one, two = (load_config(REPO / "configs" / "sample.yaml", set_overrides(a)) for a in (short, long))
    assert one.protocol == two.protocol == "inc" and one.to_dict() == two.to_dict()
    assert one.runtime.batch_size == 2


def test_protocol_names_its_option_when_wrong(capsys):
    assert main(["eval", "--protocol", "nope", "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ssd-eval: error: --protocol: key 'protocol' must be one of") and "\n" not in error


def test_a_variant_name_or_a_config_path_alike(tmp_path, monkeypatch):
    assert config_path("sample", REPO / "configs") == REPO / "configs" / "sample.yaml"
    assert config_path("configs/sample.yaml") == Path("configs/sample.yaml")  # a path stays a path
    copy = tmp_path / "mine.yml"
    shutil.copy(REPO / "configs" / "sample.yaml", copy)
    assert config_path(str(copy)) == copy
    monkeypatch.chdir(tmp_path)
    assert config_path("mine.yml") == Path("mine.yml")  # a file here, by its suffix
    with pytest.raises(UserError) as unknown:
        config_path("ssd-13", REPO / "configs")
    assert str(unknown.value).startswith(f"'ssd-13': no such variant ({REPO / 'configs' / 'ssd-13.yaml'} not found; "
                                         "variants: sample, sample-int8, sample-qdq, ssd-10, ssd-12")


def test_eval_takes_a_variant_name_as_inspect_does(tmp_path, capsys):
    assert main(["eval", "--config", "sample-int8", "--limit", "1", "--out", str(tmp_path / "r"), "--no-progress",
                 "--set", "metrics.bootstrap.replicates=0"]) == 0
    assert capsys.readouterr().out.startswith("sample-int8  protocol coco  1 images")
    assert main(["eval", "--config", "sample-int9", "--no-progress"]) == 2
    assert "'sample-int9': no such variant" in capsys.readouterr().err


def test_inspect_takes_a_config_path_too(capsys):
    assert main(["inspect", "configs/sample-int8.yaml"]) == 0
    by_path = capsys.readouterr().out
    assert main(["inspect", "sample-int8"]) == 0
    assert capsys.readouterr().out == by_path and "QOperator" in by_path


def test_bench_takes_a_config_path_alone_and_a_variant_with_its_family(monkeypatch):
    from ssd_eval import cli
    from ssd_eval.engine import bench

    benched = []
    monkeypatch.setattr(bench, "bench_models", lambda configs, **kwargs: benched.append([c.variant for c in configs]))
    assert cli.main(["bench", "--variant", "sample-int8"]) == 0
    assert cli.main(["bench", "--variant", "configs/sample-int8.yaml"]) == 0
    assert cli.main(["bench", "--config", "sample-qdq", "--config", "configs/sample.yaml"]) == 0
    assert benched == [["sample", "sample-int8"], ["sample-int8"], ["sample-qdq", "sample"]]


def test_baseline_help_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = " ".join(capsys.readouterr().out.split())
    assert "show or rewrite" not in listing  # it never shows without writing
    assert "rewrite baselines/<variant>.yaml from current results (--update)" in listing
    with pytest.raises(SystemExit):
        main(["baseline", "--help"])
    assert "--update is required: there is no dry run" in " ".join(capsys.readouterr().out.split())


def test_a_result_from_no_git_checkout_says_so():
    document = metrics_document("ssd-12", mAP=0.2)
    document["provenance"]["harness_commit"] = None
    text = render_result(EvalResult.from_document(document))
    assert "harness: not a git checkout" in text and "harness ?" not in text
    document["provenance"]["harness_commit"] = "0123456789abcdef+dirty"
    assert "harness 0123456789ab+dirty" in render_result(EvalResult.from_document(document))


def test_make_eval_takes_a_name():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "eval", "NAME=mine", "ARGS=--model my.onnx", "PROTOCOL=inc"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "-m ssd_eval eval --config configs/sample.yaml --name mine --protocol inc --model my.onnx" in dry


def test_sweep_tracks_each_run_as_eval_does(tmp_path, monkeypatch, capsys):
    """A sweep's runs go to the trackers their configs name: checked before any work, given each result."""
    from ssd_eval.reports import tracking

    events = []
    monkeypatch.setattr(tracking, "check_trackers", lambda settings, out_dir=None: events.append(("check", out_dir)))
    monkeypatch.setattr(tracking, "track", lambda result, settings: events.append(("track", result.protocol)))
    status = main(["sweep", "--config", "configs/sample.yaml", "--protocol", "coco", "--protocol", "mlperf-ssd",
                   "--results", str(tmp_path / "results"), "--no-progress", "--set", "tracking.log=[mlflow]",
                   "--set", "metrics.bootstrap.replicates=0"])
    assert status == 0, capsys.readouterr().err
    checks = [event for event in events if event[0] == "check"]
    assert len(checks) == 2 and events[:2] == checks  # both checked before the first run
    assert [event for event in events if event[0] == "track"] == [("track", "coco"), ("track", "mlperf-ssd")]


@pytest.mark.parametrize("argv", [["bench-harness"], ["bench-harness", "--quick", "--only", "int8"],
                                  ["bench-harness", "--only", "preprocess", "--preprocess-data", "d"]])
def test_the_deprecated_bench_harness_alias_passes_every_option_through(argv, monkeypatch, capsys):
    from ssd_eval.cli import commands

    calls = []
    monkeypatch.setattr(commands.subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(argv) == 0
    assert calls == [[sys.executable, "-m", "ssd_eval.testing.bench_harness", *argv[1:]]]
    assert "deprecated" in capsys.readouterr().err
