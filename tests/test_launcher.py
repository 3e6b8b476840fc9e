"""Tests for ssd_eval.engine.launcher: `eval --jobs N` equals a single run, splits the machine, fails cleanly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssd_eval.cli.commands import eval_overrides
from ssd_eval.cli.parser import build_parser
from ssd_eval.config.load import load_config
from ssd_eval.engine.launcher import (
    JobPlan,
    _Job,
    _stop,
    _update,
    _wait,
    error_line,
    job_command,
    plan_jobs,
    run_jobs,
    visible_cuda_devices,
)
from ssd_eval.engine.shards import CacheTail
from ssd_eval.errors import UserError
from ssd_eval.results.compare import speed_mismatch

from conftest import run_cli
from helpers import metrics_document

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


@pytest.mark.slow
def test_two_jobs_equal_a_single_run_byte_for_byte(tmp_path):
    single = run_cli("eval", "--config", "configs/sample-int8.yaml", "--out", str(tmp_path / "single"),
                     "--no-progress")
    assert single.returncode == 0, single.stderr
    jobs = run_cli("eval", "--config", "configs/sample-int8.yaml", "--out", str(tmp_path / "jobs"), "--jobs", "2",
                   "--no-progress")
    assert jobs.returncode == 0, jobs.stderr
    assert same_bytes(tmp_path / "jobs" / "detections.json", tmp_path / "single" / "detections.json")
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("single", "jobs"))
    assert two["stats"] == one["stats"]
    assert two["per_category_ap"] == one["per_category_ap"] and two["pr_curves"] == one["pr_curves"]
    assert two.get("error_breakdown") == one.get("error_breakdown")
    provenance = two["provenance"]
    assert provenance["parallel_jobs"] == 2 and provenance["shards"] == ["1/2", "2/2"]
    assert provenance["images"] == one["provenance"]["images"] == 8
    assert provenance["images_per_s"] == pytest.approx(8 / provenance["parallel_wall_time_s"], rel=1e-2)
    assert provenance["runtime"]["intra_op_threads"] >= 1  # each job's share of the cores
    for index in (1, 2):
        assert (tmp_path / "jobs" / f"shard-{index}-of-2" / "job.log").is_file()
    # a second run resumes every image from the jobs' caches and gives the same bytes
    again = run_cli("eval", "--config", "configs/sample-int8.yaml", "--out", str(tmp_path / "jobs"), "--jobs", "2",
                    "--no-progress")
    assert again.returncode == 0, again.stderr
    assert same_bytes(tmp_path / "jobs" / "detections.json", tmp_path / "single" / "detections.json")
    assert json.loads((tmp_path / "jobs" / "metrics.json").read_text())["provenance"]["images_per_s"] is None


@pytest.mark.slow
def test_a_failing_job_ends_the_run_with_its_error_line(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(SAMPLE / "images", images)
    annotations = json.loads((SAMPLE / "annotations.json").read_text())
    last = max(annotations["images"], key=lambda image: image["id"])  # in shard 2/2
    (images / last["file_name"]).write_bytes(b"not an image")
    run = run_cli("eval", "--config", "configs/sample.yaml", "--images", str(images), "--out", str(tmp_path / "r"),
                  "--jobs", "2", "--no-progress")
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("ssd-eval: error: --jobs 2: job 2/2 failed (exit 2): ")
    assert last["file_name"] in line and "job.log" in line
    assert not (tmp_path / "r" / "metrics.json").exists()


@pytest.mark.slow
def test_the_first_failure_stops_the_other_jobs(tmp_path):
    def job(index: int, code: str) -> _Job:
        log_path = tmp_path / f"job{index}.log"
        handle = open(log_path, "wb")
        process = subprocess.Popen([sys.executable, "-c", code], stdout=handle, stderr=subprocess.STDOUT)
        return _Job(JobPlan(index, 2), process, log_path, handle, CacheTail(tmp_path / f"cache{index}.jsonl"))

    sleeper = job(1, "import time; time.sleep(120)")
    failing = job(2, "import sys; print('warming up'); print('ssd-eval: error: model.onnx: boom', file=sys.stderr); "
                     "sys.exit(2)")
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^--jobs 2: job 2/2 failed \(exit 2\): model.onnx: boom \(its output: "):
        _wait([sleeper, failing], "v", progress=False)
    _stop([sleeper, failing])
    assert sleeper.process.poll() is not None and time.monotonic() - started < 30
    for item in (sleeper, failing):
        item.log_file.close()


def test_error_line_prefers_the_error_over_the_last_line(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("ssd-eval: WARNING: x\nssd-eval: error: the reason\nTraceback...\n")
    assert error_line(log) == "the reason"
    log.write_text("Killed\n\n")
    assert error_line(log) == "Killed"
    assert error_line(tmp_path / "none.log") == "(no output)"


def sample_config(*overrides):
    return load_config(REPO / "configs" / "sample.yaml", list(overrides))


def test_plan_splits_the_cores_and_keeps_explicit_settings():
    plans = plan_jobs(sample_config(), 4, cores=16)
    assert [p.shard for p in plans] == ["1/4", "2/4", "3/4", "4/4"]
    assert plans[0].overrides == ["runtime.intra_op_threads=4", "pipeline.workers=2", "tracking.log=[]"]
    assert all(p.cuda_device is None for p in plans)
    explicit = plan_jobs(sample_config("runtime.intra_op_threads=3", "pipeline.workers=1"), 2, cores=16)
    assert explicit[0].overrides == ["tracking.log=[]"]
    assert plan_jobs(sample_config(), 3, cores=2)[0].overrides[0] == "runtime.intra_op_threads=1"


def test_plan_gives_each_cuda_job_its_own_device():
    cuda = sample_config("runtime.providers=[CUDAExecutionProvider, CPUExecutionProvider]")
    assert [p.cuda_device for p in plan_jobs(cuda, 2, cores=16, cuda_devices=["2", "5"])] == ["2", "5"]
    assert [p.cuda_device for p in plan_jobs(cuda, 3, cores=16, cuda_devices=["0", "1"])] == ["0", "1", "0"]
    assert [p.cuda_device for p in plan_jobs(cuda, 2, cores=16, cuda_devices=None)] == ["0", "1"]
    assert visible_cuda_devices({"CUDA_VISIBLE_DEVICES": "3, 4"}) == ["3", "4"]


def test_job_command_gives_the_child_the_same_config(tmp_path):
    tricky = tmp_path / "true"  # a path YAML would read as a boolean if passed bare
    argv = ["eval", "--config", "configs/sample.yaml", "--model", str(tricky), "--out", str(tmp_path / "o"),
            "--limit", "3", "--set", "postprocess.max_detections=all", "--set", "runtime.session_config={a: '1'}",
            "--log", "mlflow", "--jobs", "2"]
    args = build_parser().parse_args(argv)
    overrides = eval_overrides(args)
    parent = load_config(args.config, overrides)
    plan = plan_jobs(parent, 2, cores=4)[1]
    command = job_command(args.config, overrides, plan, fresh=True, verbose=1)
    assert command[:5] == [sys.executable, "-m", "ssd_eval", "-v", "eval"]
    assert command[-4:] == ["--shard", "2/2", "--no-progress", "--fresh"]
    child_args = build_parser().parse_args(command[3:])
    assert child_args.shard == "2/2" and child_args.jobs == 1
    child = load_config(child_args.config, eval_overrides(child_args))
    expected = parent.to_dict()
    expected["runtime"]["intra_op_threads"] = 2
    expected["pipeline"]["workers"] = 1
    expected["tracking"]["log"] = []
    assert child.to_dict() == expected
    assert child.model.path == str(tricky) and child.model.sha256 is None


def test_jobs_refuses_bad_counts_and_shards():
    config = sample_config()
    with pytest.raises(UserError, match="at least 1"):
        run_jobs(config, 0, [], config_path="configs/sample.yaml")
    with pytest.raises(UserError, match="--jobs and --shard"):
        run_jobs(config, 2, [], config_path="configs/sample.yaml", shard="1/2")
    with pytest.raises(UserError, match="--executor 'Ray': expected one of local, ray"):
        run_jobs(config, 2, [], config_path="configs/sample.yaml", executor="Ray")  # not run locally instead


def test_ray_executor_refuses_a_bad_job_count_before_needing_ray():
    from ssd_eval.engine.ray_executor import evaluate_runs

    with pytest.raises(UserError, match="at least 1, got 0"):
        evaluate_runs([], 0)


def test_speed_of_parallel_runs_is_compared_only_with_the_same_number_of_jobs():
    def run(variant: str, jobs: int | None, **extra) -> dict:
        document = metrics_document(variant, mAP=0.2, parent="ssd-12" if variant != "ssd-12" else None)
        if jobs:
            document["provenance"].update(shards=[f"{i}/{jobs}" for i in range(1, jobs + 1)], parallel_jobs=jobs)
        document["provenance"].update(extra)
        return document

    assert speed_mismatch(run("ssd-12-int8", 2), run("ssd-12", 2)) is None
    assert speed_mismatch(run("ssd-12-int8", 2), run("ssd-12", None)) == "n/a: 2 vs 1 parallel jobs"
    merged_by_hand = run("ssd-12", None, shards=["1/2", "2/2"])
    assert speed_mismatch(run("ssd-12-int8", None), merged_by_hand) == "n/a: ssd-12 merged from shards"


def test_the_jobs_parent_holds_the_folder_until_its_metrics_json_is_written(tmp_path, monkeypatch):
    """Issue 22 item 4: ``eval --jobs`` locks its output folder from the start of its jobs to its last file
    (the merged metrics.json, written twice). Jobs are stood in for by shards evaluated here."""
    import types

    from ssd_eval.engine import jobs, launcher
    from ssd_eval.engine.pipeline import evaluate

    out = tmp_path / "out"
    config = load_config(REPO / "configs" / "sample.yaml", [("output.dir", str(out)), ("pipeline.workers", 1),
                                                              ("metrics.bootstrap.replicates", 0)])
    for index in (1, 2):
        evaluate(config, shard=(index, 2), progress=False)
    done = types.SimpleNamespace(poll=lambda: 0)
    monkeypatch.setattr(launcher, "_start", lambda plan, *args, **kwargs: types.SimpleNamespace(
        process=done, log_file=types.SimpleNamespace(close=lambda: None), resumed=0))
    monkeypatch.setattr(launcher, "_wait", lambda *args, **kwargs: None)
    refusals = []

    def second_run():
        with pytest.raises(UserError) as refused:
            evaluate(config, progress=False)
        refusals.append(str(refused.value))

    merge, write = jobs.merge_shards, jobs.write_result  # merge_jobs, as both executors end

    def merging(*args, **kwargs):
        second_run()  # the jobs are done, nothing merged yet
        return merge(*args, **kwargs)

    def writing(*args, **kwargs):
        second_run()  # merged and written once; the wall time not yet
        return write(*args, **kwargs)

    monkeypatch.setattr(jobs, "merge_shards", merging)
    monkeypatch.setattr(jobs, "write_result", writing)
    result = run_jobs(config, 2, [], config_path="configs/sample.yaml", progress=False)
    assert refusals == [f"{out}: another run is using this output directory; wait for it to finish or choose "
                        "another --out"] * 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["provenance"]["parallel_jobs"] == 2 and metrics["mAP"] == result.map
    assert metrics["provenance"]["detections"] == len(json.loads((out / "detections.json").read_text()))
    assert not (out / "cache.jsonl").exists()  # the refused runs left nothing behind


@pytest.mark.slow
def test_two_jobs_show_their_aggregate_progress_in_logs(tmp_path, coco_subset):
    """Issue 25: jobs run with --no-progress; the launcher's log shows their images done of the total, images/s
    and the time left, as a single run's lines do."""
    run = run_cli("eval", "--config", "sample", "--annotations", str(coco_subset / "annotations.json"),
                  "--images", str(coco_subset / "images"), "--name", "real", "--out", str(tmp_path / "{run}"),
                  "--jobs", "2", "--set", "pipeline.progress_interval_s=1", "--set", "metrics.bootstrap.replicates=0")
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert f"real: 200 images to run in 2 jobs, 0 from the jobs' caches; writing to {tmp_path / 'real'}" in lines
    progress = [line for line in lines if re.fullmatch(
        r"real \(2 jobs\): \d+/200 images \(\d+ %\), \d+\.\d\d img/s, about \d+m\d\ds left", line)]
    assert len(progress) >= 2, run.stderr  # at least one on the way, and the end's
    assert progress[-1].startswith("real (2 jobs): 200/200 images (100 %)")
    assert sum(line.startswith("real (2 jobs): 200/200") for line in lines) == 1


class Bar:
    def __init__(self):
        self.n = 0

    def update(self, count):
        self.n += count


def test_progress_counts_the_jobs_new_images_not_those_their_caches_held(tmp_path):
    def job(index: int, lines: int, resumed: int) -> _Job:
        cache = tmp_path / f"cache{index}.jsonl"
        cache.write_bytes(b"header\n" + b"image\n" * lines + b"half a line")
        return _Job(JobPlan(index, 2), None, tmp_path / "log", None, CacheTail(cache), resumed=resumed)

    running = [job(1, 5, 2), job(2, 3, 0)]
    bar = Bar()
    _update(bar, running)
    assert bar.n == 3 + 3  # a line being written counts once complete
    (tmp_path / "cache1.jsonl").write_bytes(b"header\n" + b"image\n")  # started afresh: none was resumed
    _update(bar, running)
    assert bar.n == 1 + 3 and running[0].resumed == 0
    held, absent = CacheTail(tmp_path / "cache2.jsonl"), CacheTail(tmp_path / "none")  # as _start counts `resumed`
    held.read()
    absent.read()
    assert held.lines - 1 == 3 and absent.lines == 0
