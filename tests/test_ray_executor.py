"""Tests for ssd_eval.engine.ray_executor: `eval --executor ray --jobs N` on a real local Ray instance equals a
single run, survives a killed worker, stops on a user error with one line; `sweep` ends with the table.

The tests that need Ray share one local instance (``ray.init(num_cpus=2)``) and skip where Ray is not installed;
the test of the missing-Ray message runs everywhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest

from ssd_eval.cli import main
from ssd_eval.engine import ray_executor
from ssd_eval.engine.shards import CacheTail

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
VARIANTS = ("sample", "sample-int8", "sample-qdq")


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (2 CPUs, no dashboard); its address for other drivers."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]'): Ray executor tests skip")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def at_repo(monkeypatch):
    """Run in-process commands from the checkout (the configs' relative paths)."""
    monkeypatch.chdir(REPO)


def eval_args(config: str, out: Path, *extra: str) -> list[str]:
    return ["eval", "--config", config, "--out", str(out), *extra]


def stats(folder: Path) -> list[float]:
    return json.loads((folder / "metrics.json").read_text())["stats"]


def copied_sample(root: Path, copies: int = 1) -> tuple[Path, Path]:
    """The sample's images and annotations, each image ``copies`` times under new ids (image id * 1000 + k), so a
    shard has enough images to be caught mid-task; returns (annotation path, image dir)."""
    gt = json.loads((SAMPLE / "annotations.json").read_text())
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for copy in range(copies):
        for image in gt["images"]:
            new_id = image["id"] * 1000 + copy
            name = f"{new_id:012d}.jpg"
            shutil.copyfile(SAMPLE / "images" / image["file_name"], images_dir / name)
            images.append(dict(image, id=new_id, file_name=name))
        for ann in gt["annotations"]:
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=ann["image_id"] * 1000 + copy))
    path = root / "annotations.json"
    path.write_text(json.dumps(dict(gt, images=images, annotations=annotations)))
    return path, images_dir


def test_ray_jobs_equal_a_single_run_on_the_sample_and_resume(ray_address, at_repo, tmp_path, capsys):
    config = "configs/sample-int8.yaml"
    assert main(eval_args(config, tmp_path / "single", "--no-progress")) == 0
    capsys.readouterr()
    assert main(eval_args(config, tmp_path / "ray", "--executor", "ray", "--jobs", "2")) == 0
    err = capsys.readouterr().err
    assert "sample-int8: 2 shards as Ray tasks on 1 node(s) (2 CPUs); 8 images to run, 0 from the shards' caches; " \
           "1 CPU(s) and onnxruntime threads per task" in err
    single, ray = tmp_path / "single", tmp_path / "ray"
    assert (ray / "detections.json").read_bytes() == (single / "detections.json").read_bytes()
    assert stats(ray) == stats(single)
    provenance = json.loads((ray / "metrics.json").read_text())["provenance"]
    assert provenance["executor"] == "ray" and provenance["ray_nodes"] == 1 and provenance["parallel_jobs"] == 2
    assert provenance["shards"] == ["1/2", "2/2"]
    assert [(n["shard"], n["attempts"]) for n in provenance["shard_nodes"]] == [("1/2", 1), ("2/2", 1)]
    assert all(n["node_id"] and n["node_ip"] for n in provenance["shard_nodes"])
    assert provenance["runtime"]["intra_op_threads"] == 1  # 2 CPUs split between 2 tasks
    for index in (1, 2):  # the usual shard folders, as `eval --shard i/2` leaves them
        folder = ray / f"shard-{index}-of-2"
        assert sorted(p.name for p in folder.iterdir()) == ["cache.jsonl", "detections.json", "shard.json"]
        assert len((folder / "cache.jsonl").read_bytes().splitlines()) == 1 + 4
    # The same command again: every image comes back from the shards' caches (sent to the tasks), same bytes.
    assert main(eval_args(config, tmp_path / "ray", "--executor", "ray", "--jobs", "2")) == 0
    assert "0 images to run, 8 from the shards' caches" in capsys.readouterr().err
    assert (ray / "detections.json").read_bytes() == (single / "detections.json").read_bytes()
    assert stats(ray) == stats(single)
    # Caches of another run (other execution settings): a task's user error, naming this machine's shard cache
    # (not the task's scratch folder), one line, exit 2.
    assert main(eval_args(config, ray, "--executor", "ray", "--jobs", "2", "--no-progress",
                          "--set", "runtime.graph_optimization=basic")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        rf"ssd-eval: error: sample-int8 shard (\d)/2: {re.escape(str(ray))}/shard-\1-of-2/cache\.jsonl: was written "
        r"for a different run \(execution .*\); it is not reused: pass --fresh to discard it, or choose another --out",
        err[0]), err


def test_ray_jobs_equal_a_single_run_on_the_real_subset(ray_address, coco_subset, at_repo, tmp_path, capsys):
    real = ["--annotations", str(coco_subset / "annotations.json"), "--images", str(coco_subset / "images"),
            "--limit", "60", "--no-progress"]
    assert main(eval_args("configs/sample.yaml", tmp_path / "single", *real)) == 0
    assert main(eval_args("configs/sample.yaml", tmp_path / "ray", *real, "--executor", "ray", "--jobs", "2")) == 0
    capsys.readouterr()
    single, ray = tmp_path / "single", tmp_path / "ray"
    assert json.loads((single / "metrics.json").read_text())["provenance"]["images"] == 60
    assert json.loads((single / "metrics.json").read_text())["provenance"]["detections"] > 0
    assert (ray / "detections.json").read_bytes() == (single / "detections.json").read_bytes()
    assert stats(ray) == stats(single)


def test_a_worker_killed_mid_task_is_retried_from_its_returned_lines(ray_address, at_repo, tmp_path, monkeypatch,
                                                                     capsys):
    annotations, images = copied_sample(tmp_path / "data", copies=10)  # 80 images, 40 a shard
    data = ["--annotations", str(annotations), "--images", str(images), "--no-progress"]
    assert main(eval_args("configs/sample.yaml", tmp_path / "single", *data)) == 0
    killed: list[int] = []
    receive = ray_executor._receive

    def kill_shard_1_after_its_first_lines(shard, message):
        receive(shard, message)
        if shard.shard == (1, 2) and shard.attempts == 1 and shard.lines > 1 and not shard.done and not killed:
            killed.append(shard.lines - 1)
            os.kill(shard.node["pid"], signal.SIGKILL)

    monkeypatch.setattr(ray_executor, "_receive", kill_shard_1_after_its_first_lines)
    capsys.readouterr()
    assert main(eval_args("configs/sample.yaml", tmp_path / "ray", *data, "--executor", "ray", "--jobs", "2")) == 0
    assert killed, "shard 1 sent no lines before it finished"
    err = capsys.readouterr().err
    assert f"sample shard 1/2: its worker on {ray_executor.node_info()['node_ip']} died (WorkerCrashedError" in err
    assert f"submitting it again (retry 1 of 3) from its {killed[0]} finished images" in err
    ray = tmp_path / "ray"
    assert (ray / "detections.json").read_bytes() == (tmp_path / "single" / "detections.json").read_bytes()
    assert stats(ray) == stats(tmp_path / "single")
    provenance = json.loads((ray / "metrics.json").read_text())["provenance"]
    assert [(n["shard"], n["attempts"]) for n in provenance["shard_nodes"]] == [("1/2", 2), ("2/2", 1)]
    # The retry went on from the lines the killed task had sent, not from its first image.
    resumed = json.loads((ray / "shard-1-of-2" / "shard.json").read_text())["provenance"]["resumed_images"]
    assert killed[0] <= resumed < 40


def test_a_user_error_in_one_shard_is_one_line_and_exit_2(ray_address, tmp_path):
    annotations, images = copied_sample(tmp_path / "data")
    (images / "000000872000.jpg").write_bytes(b"not a jpeg")  # image 872: the last, in shard 2/2
    out = tmp_path / "out"
    env_address = {"RAY_ADDRESS": ray_address}  # a second driver on the module's instance
    result = run_cli_with_env(env_address, "eval", "--config", "configs/sample.yaml", "--annotations",
                              str(annotations), "--images", str(images), "--out", str(out), "--executor", "ray",
                              "--jobs", "2", "--no-progress")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ssd-eval: error: sample shard 2/2: ")
    assert f"{images / '000000872000.jpg'}: cannot decode image (image id 872000)" in lines[0]
    assert not (out / "metrics.json").exists() and not (out / "detections.json").exists()
    assert not (out / "shard-2-of-2" / "shard.json").exists()


def run_cli_with_env(env: dict[str, str], *args: str):
    import subprocess

    return subprocess.run([sys.executable, "-m", "ssd_eval", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1", **env))


def test_sweep_of_three_variants_and_two_protocols_ends_with_the_table(ray_address, at_repo, tmp_path, capsys):
    args = ["sweep", "--results", str(tmp_path), "--executor", "ray", "--no-progress",
            "--protocol", "coco", "--protocol", "mlperf-ssd"]
    for variant in VARIANTS:
        args += ["--config", f"configs/{variant}.yaml"]
    assert main(args) == 0
    out = capsys.readouterr().out
    runs = sorted(p.parent.name for p in tmp_path.glob("*/metrics.json"))
    assert runs == sorted(f"{v}{s}" for v in VARIANTS for s in ("", "-mlperf-ssd"))
    table = (tmp_path / "TABLE.md").read_text()
    for run in runs:
        document = json.loads((tmp_path / run / "metrics.json").read_text())
        assert document["provenance"]["executor"] == "ray"
        assert f"{document['stats'][0]:.4f}" in table
    # The sample's published-in-README coco mAPs (fp32, int8, QDQ), as single runs give them.
    for variant, expected in zip(VARIANTS, (0.531605, 0.523127, 0.528758)):
        assert round(stats(tmp_path / variant)[0], 6) == expected
    # stdout: a line per run, then the table (a header, a rule, a row per run) last.
    lines = out.rstrip("\n").splitlines()
    assert lines[-8].startswith("variant ") and lines[-7].startswith("-------")
    assert sorted((row.split()[0], row.split()[1]) for row in lines[-6:]) == \
        sorted((v, p) for v in VARIANTS for p in ("coco", "mlperf-ssd"))
    assert len(lines) == 6 + 8 and all("mAP " in line for line in lines[:6])


def test_executor_ray_without_ray_is_one_line_naming_the_pip_command(at_repo, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    assert main(eval_args("configs/sample.yaml", out, "--executor", "ray", "--jobs", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ssd-eval: error: --executor ray needs Ray, which is not installed: pip install -e '.[ray]'"]
    assert not out.exists()
    assert main(["sweep", "--config", "configs/sample.yaml", "--results", str(out), "--executor", "ray"]) == 2
    assert "pip install -e '.[ray]'" in capsys.readouterr().err
    assert not out.exists()


def test_tail_sends_complete_lines_once(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b"header\n")
    tail = CacheTail(path, len(b"header\n"))
    assert tail.read() == {}
    with open(path, "ab") as handle:
        handle.write(b"one\ntw")
    assert tail.read() == {"lines": b"one\n", "reset": False}
    with open(path, "ab") as handle:
        handle.write(b"o\n")
    assert tail.read() == {"lines": b"two\n", "reset": False}
    path.write_bytes(b"new\n")  # started afresh: shorter than what was sent
    assert tail.read() == {"lines": b"new\n", "reset": True}
