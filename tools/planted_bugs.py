"""Issue 15's planted bugs, each planted alone in a throwaway copy of the package: a named test must catch it.

    .venv/bin/python tools/planted_bugs.py                              # every bug in BUGS, in that order
    .venv/bin/python tools/planted_bugs.py pil-bicubic nan-accepted     # only these
    .venv/bin/python tools/planted_bugs.py --list                       # the bugs, their files and tests

It copies the package, the tests and the data they read (tools/mutants.py ``COPIED``) into a fresh folder outside the
checkout (``--workdir``, default a new ``$TMPDIR/ssd_eval-planted-*``; ``../shared``, the real COCO subset
beside the checkout, is linked in as tools/mutants.py does), so the checkout is never written to and can be
edited meanwhile. There it first runs every listed test once on the unmodified copy (they must all pass),
then, for each bug, replaces the exact text ``old`` with ``new`` in its file (it must occur exactly once,
else the entry is stale: the code moved on and the entry needs updating), runs
``python -m pytest -x -q -p no:cacheprovider -rA <tests>`` with PYTHONPATH putting the copy first (the venv's
editable install points at the checkout; the script checks ``ssd_eval.__file__`` resolves into the copy)
and restores the file.

Prints ``CAUGHT <name> -> <first failing test>`` or ``MISSED <name>`` per bug (``STALE`` / ``ERROR`` where
the bug could not be planted or pytest could not run), then a summary. Exit 1 when a bug is missed, stale
or errs, or a test fails on the unmodified copy; 2 for bad arguments or a copy that does not import.
Each bug is the smallest realistic change of the current code; the tests are a few fast ones from the
``test_faults_*`` files (docs/TESTING.md), so the whole list runs in about a minute. Run by CI
(``.ci/run``); not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mutants import REPO, copy_checkout, link_shared  # tools/: the copy is made as make mutants makes it


@dataclass(frozen=True)
class Bug:
    """One planted bug: ``old`` replaced by ``new`` in ``file`` (relative to the repository root), and the
    test node ids (run in this order, ``-x``) of which at least one must then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


@dataclass
class Outcome:
    bug: Bug
    status: str  # CAUGHT, MISSED, STALE or ERROR
    detail: str = ""  # CAUGHT: the first failing node id; STALE / ERROR: why


PRE = "tests/test_faults_preprocess.py::"
CONF = "tests/test_faults_config.py::"
SCORE = "tests/test_faults_scoring.py::"
PIPE = "tests/test_faults_pipeline.py::"
GATE = "tests/test_faults_gate.py::"
HARNESS_TENSORS = PRE + "test_harness_tensors_equal_an_independent_preprocessing_of_the_sample"
KNOWN_RESIZE = PRE + "test_resize_known_answer_tells_bilinear_from_bicubic_and_nearest"
PROBE = PRE + "test_the_probe_gives_the_ground_truths_map_at_the_right_preprocessing"
POSTPROCESS = CONF + "test_postprocess_config_reaches_the_detections"
RUNTIME = CONF + "test_runtime_settings_reach_the_session"
KEY_FIELD = PIPE + "test_a_cache_is_refused_after_each_key_field_changes"
LABELS = "tests/test_cli_label_space.py::"
CACHE_KEY_EXECUTION = ('        "execution": hash_data({"providers": list(providers),\n'
                       '                                "graph_optimization": config.runtime.graph_optimization,\n'
                       '                                "session_config": dict(session_config or {})}),\n')

# Issue 15's list, in its order.
BUGS: list[Bug] = [
    # ---- preprocessing
    Bug("pil-bicubic", "ssd_eval/inference/preprocess.py",
        "image.resize((width, height), Image.BILINEAR)", "image.resize((width, height), Image.BICUBIC)",
        (f"{KNOWN_RESIZE}[pil-down-x]", f"{HARNESS_TENSORS}[pil-non-square]")),
    Bug("opencv-nearest", "ssd_eval/inference/preprocess.py",
        "interpolation=cv2.INTER_LINEAR", "interpolation=cv2.INTER_NEAREST",
        (f"{KNOWN_RESIZE}[opencv-down-x]", f"{HARNESS_TENSORS}[opencv-non-square]")),
    Bug("std-reversed", "ssd_eval/engine/prefetch.py",
        "std=(pre.std[0], pre.std[1], pre.std[2])", "std=(pre.std[2], pre.std[1], pre.std[0])",
        (f"{HARNESS_TENSORS}[pil-non-square]", f"{PROBE}[pil]")),
    Bug("mean-reversed", "ssd_eval/engine/prefetch.py",
        "mean=(pre.mean[0], pre.mean[1], pre.mean[2])", "mean=(pre.mean[2], pre.mean[1], pre.mean[0])",
        (f"{HARNESS_TENSORS}[pil-non-square]", f"{PROBE}[pil]")),
    # ---- config reaching the run
    Bug("max-detections-ignored", "ssd_eval/engine/pipeline.py",
        "categories=categories, max_detections=post.max_detections,\n", "categories=categories,\n",
        (f"{POSTPROCESS}[top-2]", f"{POSTPROCESS}[top-3-threshold-0.6]")),
    Bug("score-threshold-ignored", "ssd_eval/engine/pipeline.py",
        "score_threshold=post.score_threshold, clip_boxes=post.clip_boxes,", "clip_boxes=post.clip_boxes,",
        (f"{POSTPROCESS}[threshold-0.6]", f"{POSTPROCESS}[top-3-threshold-0.6]")),
    Bug("graph-optimization-disable-is-all", "ssd_eval/inference/runner.py",
        '"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,',
        '"disable": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,',
        (f"{RUNTIME}[disable]",)),
    Bug("intra-op-threads-not-applied", "ssd_eval/inference/runner.py",
        "    options.intra_op_num_threads = runtime.intra_op_threads\n", "",
        (f"{RUNTIME}[basic]",)),
    Bug("input-width-unchecked", "ssd_eval/inference/runner.py",
        "for f, e in zip(fixed, expected)):", "for f, e in zip(fixed[:2], expected[:2])):",  # channels, height
        (f"{CONF}test_model_input_height_and_width_are_both_checked[wider]",
         f"{CONF}test_model_input_height_and_width_are_both_checked[narrower]")),
    # ---- scoring
    Bug("scoring-all-images", "ssd_eval/engine/pipeline.py",
        "lambda: cache.detections(evaluated), evaluated, count=",
        "lambda: cache.detections(evaluated), list(dataset.images), count=",
        (f"{SCORE}test_evaluate_equals_plain_pycocotools_on_an_independent_route[limit-3]",)),
    Bug("per-category-ap-max-dets-1", "ssd_eval/scoring/cocoeval.py",
        "values = precision[:, :, k, 0, -1]", "values = precision[:, :, k, 0, 0]",
        (f"{SCORE}test_per_category_ap_by_hand_at_max_dets_100",)),
    Bug("pr-curve-iou75-at-70", "ssd_eval/scoring/cocoeval.py",
        '"iou75": _mean_curve(precision[5]),', '"iou75": _mean_curve(precision[4]),',
        (f"{SCORE}test_pr_curves_by_hand_at_iou_50_and_75",)),
    Bug("pr-curve-averages-minus-1", "ssd_eval/scoring/cocoeval.py",
        "valid = row[row > -1]", "valid = row",
        (f"{SCORE}test_pr_curves_by_hand_at_iou_50_and_75",)),
    # ---- the resume cache key
    Bug("cache-key-without-postprocess", "ssd_eval/engine/cache.py",
        '        "postprocess_sha256": hash_data(post),\n', "",
        (f"{KEY_FIELD}[label-map]", f"{KEY_FIELD}[top-k]", f"{KEY_FIELD}[score-threshold]")),
    Bug("cache-key-without-annotations", "ssd_eval/engine/cache.py",
        '        "annotations_sha256": dataset.sha256,\n', "",
        (f"{KEY_FIELD}[annotation-file]",)),
    Bug("cache-key-without-providers", "ssd_eval/engine/cache.py",
        CACHE_KEY_EXECUTION, CACHE_KEY_EXECUTION.replace('"providers": list(providers),\n'
                                                         '                                ', ""),
        (f"{KEY_FIELD}[providers]",)),
    Bug("cache-key-without-graph-optimization", "ssd_eval/engine/cache.py",
        CACHE_KEY_EXECUTION, CACHE_KEY_EXECUTION.replace('"graph_optimization": config.runtime.graph_optimization,\n'
                                                         '                                ', ""),
        (f"{KEY_FIELD}[graph-optimization]",)),
    # The protocol's switches are resolved into the config before the key is made (config.resolve_protocol),
    # so the key can only miss the protocol-implied backend by leaving the resolved one out (as compare.py
    # does, there because the protocol label is compared); only the protocol-implied case is run here.
    Bug("cache-key-without-protocol-resize-backend", "ssd_eval/engine/cache.py",
        "    pre = dataclasses.asdict(config.preprocess)\n",
        "    pre = {k: v for k, v in dataclasses.asdict(config.preprocess).items() if k != \"resize_backend\"}\n",
        (f"{KEY_FIELD}[protocol-implied-resize-backend]",)),
    Bug("cache-changed-in-use-unchecked", "ssd_eval/engine/cache.py",
        "                if found != image_id:\n"
        '                    raise UserError(f"{self.path}: changed while in use (expected image {image_id} at byte "\n'
        '                                    f"{self.offsets[image_id]}); pass --fresh to start over")\n', "",
        (f"{PIPE}test_a_cache_file_changed_while_in_use_is_refused",)),
    # ---- batching and merging
    Bug("last-partial-batch-dropped", "ssd_eval/engine/pipeline.py",
        "        if batch_records:\n            flush_batch()\n", "",
        (f"{PIPE}test_a_last_partial_batch_gives_the_same_detections_as_batch_1[7-images-batch-2]",)),
    Bug("merge-coverage-unchecked", "ssd_eval/engine/shards.py",
        "    if covered != set(expected):\n"
        "        absent = sorted(set(expected) - covered)\n"
        "        raise UserError(f\"merge: the shards do not cover the image set (e.g. image "
        "{absent[0] if absent else '?'} \"\n"
        '                        "is missing)")\n', "",
        (f"{PIPE}test_merge_refuses_shards_that_do_not_cover_the_image_set",)),
    Bug("merge-duplicates-unchecked", "ssd_eval/engine/shards.py",
        "            if image_id in seen:\n"
        '                raise UserError(f"merge: image {image_id} is in both {seen[image_id]} and {directory}")\n',
        "", (f"{PIPE}test_merge_refuses_an_image_in_two_shards",)),
    # ---- gate and table
    Bug("drop-rule-extra-0.01", "ssd_eval/reports/gate.py",
        "broken = drop > max_drop_pct + FLOAT_SLACK", "broken = drop > max_drop_pct + 0.01",
        (f"{GATE}test_drop_rule_edge[0.005-above]", f"{GATE}test_drop_limit_zero_tolerates_only_rounding")),
    Bug("parent-map-0-unguarded", "ssd_eval/results/compare.py",
        '    if parent_result["mAP"] <= 0:\n'
        "        raise UserError(f\"{parent_result['_source']}: mAP is {parent_result['mAP']}; \"\n"
        '                        "cannot compute a drop ratio")\n', "",
        (f"{GATE}test_parent_map_of_zero_is_one_input_error_line",)),
    Bug("preprocess-not-compared", "ssd_eval/results/compare.py",
        'for section in ("preprocess", "postprocess"):', 'for section in ("postprocess",):',
        (f"{GATE}test_preprocessing_differences_are_not_compared",
         f"{GATE}test_gate_refuses_a_parent_with_other_preprocessing")),
    Bug("decode-pipeline-not-compared", "ssd_eval/results/compare.py",
        '"graph optimization"), ("config.pipeline", "decode pipeline")):', '"graph optimization")):',
        (f"{GATE}test_decode_pipeline_differences_blank_only_the_speedup",)),
    Bug("nan-accepted", "ssd_eval/utils.py",
        "return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)",
        "return isinstance(value, (int, float)) and not isinstance(value, bool)",
        (f"{GATE}test_nan_or_inf_in_a_metrics_file_is_refused_naming_file_and_key",)),
    # ---- issue 23: found by thinking about the data (every interval level checked against np.percentile, a run
    # of exactly the limit, an image skipped then paired, ids of 3 to 6 digits, a file edited between steps)
    Bug("interval-tail-not-halved", "ssd_eval/scoring/bootstrap.py",
        "    tail = (1 - level) / 2 * 100\n    low, high = np.percentile(values[defined], [tail, 100 - tail])\n",
        "    tail = (1 - level) * 100\n    low, high = np.percentile(values[defined], [tail, 100 - tail])\n",
        ("tests/test_uncertainty.py::test_a_runs_interval_is_the_replicates_percentiles_at_its_level[level-0.95]",
         "tests/test_uncertainty.py::test_a_paired_difference_is_the_percentiles_of_the_replicates_differences[level-0.90]")),
    Bug("bootstrap-off-at-exactly-max-images", "ssd_eval/engine/finish.py",
        "image_count > boot.max_images", "image_count >= boot.max_images",
        ("tests/test_uncertainty.py::test_a_run_of_exactly_max_images_is_bootstrapped[exactly-max-images]",
         "tests/test_pipeline.py::test_a_run_of_exactly_max_images_gets_its_intervals")),
    Bug("skipped-images-kept-when-pairing", "ssd_eval/results/paired.py",
        "        ids = [i for i in ids if i not in skipped]\n", "",
        ("tests/test_uncertainty.py::test_runs_that_skipped_a_bad_image_are_paired_on_the_images_they_scored",)),
    Bug("subset-repeated-id-accepted", "ssd_eval/data/subsets.py",
        "    if repeated is not None:\n"
        '        raise UserError(f"{path}: image id {repeated} appears more than once in image_ids '
        '(it would be inferred "\n'
        '                        "and scored twice); each image must be listed once")\n', "",
        ("tests/test_subsets.py::test_a_subset_file_listing_an_image_twice_is_refused_naming_the_id[ascending]",
         "tests/test_subsets.py::test_eval_of_a_subset_listing_an_image_twice_is_one_line_and_exit_2")),
    Bug("merged-ids-sorted-as-strings", "ssd_eval/engine/shards.py",
        "    image_ids = sorted(seen)\n", "    image_ids = sorted(seen, key=str)\n",
        ("tests/test_shards.py::test_merged_ids_of_every_length_are_the_single_runs_image_set",)),
    Bug("merge-annotations-change-unchecked", "ssd_eval/engine/shards.py",
        '    if dataset.sha256 != first["identity"]["annotations_sha256"]:\n'
        '        raise UserError(f"{dataset.annotations_path}: changed since the shards were made (sha256 differs)")\n',
        "", ("tests/test_shards.py::test_merge_refuses_shards_whose_annotation_file_was_edited_after_them",)),
    # issue 22b: the cache key's model outputs, the folder lock held to the last file, tracking checked first
    Bug("cache-key-without-model-io", "ssd_eval/engine/cache.py",
        '        "model_io": f"{io.input_name} -> {io.boxes}, {io.labels}, {io.scores}",\n', "",
        ("tests/test_pipeline.py::test_another_score_output_is_not_served_from_the_cache_through_the_cli",
         "tests/test_pipeline.py::test_each_field_of_the_cache_key_changes_the_key")),
    Bug("eval-lock-released-before-metrics-json", "ssd_eval/engine/pipeline.py",
        '        detection_count = write_detections(out_dir / "detections.json", cache.detections(evaluated))\n',
        '        detection_count = write_detections(out_dir / "detections.json", cache.detections(evaluated))\n'
        "        cache.close()\n        folder._lock.close()\n",
        ("tests/test_pipeline.py::test_a_second_run_after_detections_but_before_metrics_json_is_refused",)),
    Bug("merge-without-folder-lock", "ssd_eval/engine/shards.py",
        "        if not locked:\n            held.enter_context(folder_lock(out_dir))\n", "",
        ("tests/test_shards.py::test_a_second_merge_into_the_folder_is_refused_until_metrics_json_is_written",)),
    Bug("jobs-parent-without-folder-lock", "ssd_eval/engine/launcher.py",
        "    with folder_lock(out_dir):\n", "    with open(os.devnull):\n",
        ("tests/test_launcher.py::test_the_jobs_parent_holds_the_folder_until_its_metrics_json_is_written",)),
    Bug("tracking-target-unchecked", "ssd_eval/reports/tracking.py",
        "            check_mlflow_target(mlflow_uri(tracking.uri))\n", "            mlflow_uri(tracking.uri)\n",
        ("tests/test_tracking.py::test_an_unreachable_mlflow_server_fails_within_seconds_before_any_image",)),
    Bug("mlflow-retries-unbounded", "ssd_eval/reports/tracking.py",
        "    settings = dict(MLFLOW_HTTP_DEFAULTS)\n", "    settings = {}\n",
        ("tests/test_tracking.py::test_a_tracking_server_failing_after_the_run_is_given_up_within_seconds",)),
    # issue 22a: annotation ids <= 0, the COCO-80 label table, odd model outputs, inverted boxes
    Bug("annotation-id-0-not-renumbered", "ssd_eval/scoring/cocoeval.py",
        'renumber = any(int(ann["id"]) <= 0 for ann in gt["annotations"])', "renumber = False",
        ("tests/test_metrics.py::test_annotation_ids_from_zero_or_below_score_a_perfect_detector_one_on_every_backend"
         "[pycocotools-False-0]",
         f"{LABELS}test_a_91_entry_category_list_numbered_from_0_scores_as_plain_pycocotools")),
    Bug("label-map-from-the-file", "ssd_eval/inference/postprocess.py",
        "return np.asarray([0] + [c if c in listed else NOT_SCORED for c in COCO_80_IDS], dtype=np.int64)",
        "return np.asarray([0] + sorted(listed), dtype=np.int64)",
        ("tests/test_postprocess.py::test_default_label_map_is_the_coco_80_table_whatever_the_file_lists",
         f"{LABELS}test_a_91_entry_category_list_numbered_from_0_scores_as_plain_pycocotools")),
    Bug("unlisted-categories-not-dropped", "ssd_eval/inference/postprocess.py",
        "    order = order[categories[labels[order]] != NOT_SCORED]\n", "",
        ("tests/test_postprocess.py::test_detections_of_categories_the_file_does_not_list_are_dropped_after_the_cap",
         f"{LABELS}test_a_person_only_file_scores_only_person_as_pycocotools_does")),
    Bug("pixel-boxes-not-warned", "ssd_eval/inference/postprocess.py",
        'if share["coordinates_above_1.05"] > MOST:', 'if share["coordinates_above_1.05"] > 1:',
        ("tests/test_postprocess.py::test_output_warnings_name_the_likely_cause_and_the_key_that_fixes_it"
         "[pixels-postprocess.box_scale]",
         f"{LABELS}test_boxes_in_pixels_warn_fail_with_strict_and_score_right_with_box_scale")),
    Bug("strict-not-passed", "ssd_eval/cli/commands.py",
        "progress=progress,\n                          strict=args.strict, on_result=on_result)",
        "progress=progress,\n                          on_result=on_result)",
        (f"{LABELS}test_boxes_in_pixels_warn_fail_with_strict_and_score_right_with_box_scale",)),
    Bug("inverted-boxes-always-clamped", "ssd_eval/inference/postprocess.py",
        "    if not keep_inverted_boxes:\n", "    if True:\n",
        ("tests/test_postprocess.py::test_inverted_box_keeps_its_negative_size_when_asked",
         f"{LABELS}test_an_inverted_box_is_clamped_under_coco_and_passed_through_under_mlperf[mlperf-ssd]")),
    Bug("keep-inverted-boxes-not-passed", "ssd_eval/engine/pipeline.py",
        "keep_inverted_boxes=post.keep_inverted_boxes, ", "",
        (f"{LABELS}test_an_inverted_box_is_clamped_under_coco_and_passed_through_under_mlperf[mlperf-ssd]",)),
    # issue 21: a gate never looser than its written tolerance; new models, unlisted results, exit 2 for bad input.
    # Caught by the gate's, the loaders', the results' and the table's own tests (not test_faults_*).
    Bug("ci95-old-outside-the-interval-rule", "ssd_eval/reports/gate.py",
        "    if fixed_drop > allowed + FLOAT_SLACK or -point > allowed + FLOAT_SLACK:\n",
        "    if difference.high < expected_difference - FLOAT_SLACK:\n",
        ("tests/test_gate.py::test_ci95_is_a_non_inferiority_test_never_looser_than_the_margin[std-0.9]",)),
    Bug("ci95-inconclusive-tests-the-upper-end", "ssd_eval/reports/gate.py",
        "    elif low < -allowed - FLOAT_SLACK:\n",
        "    elif difference.high - expected_difference < -allowed - FLOAT_SLACK:\n",
        ("tests/test_gate.py::test_ci95_is_a_non_inferiority_test_never_looser_than_the_margin[inconclusive]",)),
    Bug("quantized-child-judged-only-vs-parent", "ssd_eval/reports/gate.py",
        "    fixed_drop = rule.expected - got\n", "    fixed_drop = -point\n",
        ("tests/test_gate.py::test_a_quantized_child_equal_to_its_broken_parent_fails_its_own_baseline",)),
    Bug("images-needed-linear-not-sqrt", "ssd_eval/reports/gate.py",
        "    needed = images * ((estimate - low) / room) ** 2\n", "    needed = images * (estimate - low) / room\n",
        ("tests/test_gate.py::test_images_needed_scales_the_lower_half_width_as_one_over_sqrt_n[4-0.0--0.3-0.002-90000]",)),
    Bug("new-model-fails-without-require", "ssd_eval/reports/gate.py",
        "    if changed and (require_model_sha256 or baseline.require_model_sha256):\n", "    if changed:\n",
        ("tests/test_gate.py::test_a_better_model_than_the_baseline_pin_passes_with_the_model_changed_note",)),
    Bug("fp32-model-passes-as-a-quantized-variant", "ssd_eval/reports/gate.py",
        "    if baseline.quantization is not None and quantization != baseline.quantization:\n",
        '    if baseline.quantization is not None and quantization not in (baseline.quantization, "none"):\n',
        ("tests/test_gate.py::test_a_model_of_another_quantization_format_than_the_baselines_fails[QOperator-none-FAIL]",)),
    Bug("update-writes-no-quantization", "ssd_eval/reports/baseline_update.py",
        "                        quantization if quantization in QUANTIZATION_FORMATS else None,\n",
        "                        None,\n",
        ("tests/test_gate.py::test_update_records_the_quantization_format_and_keeps_require_model_sha256",)),
    Bug("strict-does-not-fail", "ssd_eval/reports/gate.py",
        '        checks += [_verdict(variant, "baseline", failed=True, text=f"it has results in ',
        '        checks += [_verdict(variant, "baseline", failed=False, text=f"it has results in ',
        ("tests/test_gate.py::test_results_without_a_baseline_are_listed_and_strict_fails_them",)),
    Bug("not-gated-listed-only-under-strict", "ssd_eval/reports/gate.py",
        "    if unlisted:\n", "    if unlisted and strict:\n",
        ("tests/test_gate.py::test_results_without_a_baseline_are_listed_and_strict_fails_them",)),
    Bug("update-ignores-tolerance", "ssd_eval/reports/baseline_update.py",
        "        if tolerance is not None:\n", "        if tolerance is None:\n",
        ("tests/test_gate.py::test_update_writes_the_asked_tolerance_and_says_which",)),
    Bug("yaml-duplicate-keys-kept", "ssd_eval/loaders.py",
        "            seen[key] = line\n", "",
        ("tests/test_loaders.py::test_a_yaml_key_given_twice_names_the_file_the_key_and_both_lines[postprocess]",)),
    Bug("config-read-with-plain-safe-load", "ssd_eval/config/load.py",
        "        data = load_yaml(path.read_text(), str(path))\n    except yaml.YAMLError as exc:",
        "        data = yaml.safe_load(path.read_text())\n    except yaml.YAMLError as exc:",
        ("tests/test_loaders.py::test_a_config_with_two_postprocess_blocks_is_exit_2_and_one_line",)),
    Bug("subset-read-with-plain-json", "ssd_eval/data/subsets.py",
        'data = load_json(path.read_text(encoding="utf-8"), str(path))',
        'data = json.loads(path.read_text(encoding="utf-8"))',
        ("tests/test_loaders.py::test_a_subset_file_with_a_key_twice_is_exit_2_and_one_line",)),
    Bug("metrics-intervals-unchecked", "ssd_eval/results/result.py",
        '("intervals", "interval_map"), ', "",
        ("tests/test_results.py::test_each_malformed_field_a_reader_touches_is_one_line_and_exit_2[intervals=str-gate]",)),
    Bug("metrics-preprocess-unchecked", "ssd_eval/results/result.py",
        '("provenance.config.preprocess", "dict"), ', "",
        ("tests/test_results.py::test_each_malformed_field_a_reader_touches_is_one_line_and_exit_2"
         "[provenance.config.preprocess=list0-table]",)),
    Bug("table-plus-minus-for-any-interval", "ssd_eval/reports/table.py",
        "    if centre == shown:\n", "    if centre:\n",
        ("tests/test_table.py::test_map_ci_prints_the_interval_as_low_high_unless_it_is_centred_on_the_point[issue-21]",)),
    # ---- issue 26: speed levers must change no detection; per-stage times must go to the right stage
    Bug("normalize-lut-channel-shifted", "ssd_eval/inference/preprocess.py",
        "written = cv2.LUT(plane, table[channel], dst=out[channel])",
        "written = cv2.LUT(plane, table[(channel + 1) % 3], dst=out[channel])",
        ("tests/test_levers.py::test_levers_leave_the_sample_detections_byte_identical[inc]",)),
    Bug("input-wait-not-counted", "ssd_eval/engine/pipeline.py",
        "        clock.input_wait_s += time.perf_counter() - waited\n", "",
        ("tests/test_stages.py::test_a_slow_decode_shows_as_decode_time_and_session_run_idle",)),
    Bug("spinning-setting-not-applied", "ssd_eval/inference/runner.py",
        "sorted({**spinning_entries(runtime), **entries}.items())", "sorted(entries.items())",
        ("tests/test_levers.py::test_allow_spinning_reaches_the_session[False-0]",)),
]

def prepare(workdir: Path) -> Path:
    """A fresh copy of the package, its tests and their data under ``workdir``; returns the copy's root."""
    root = workdir / "repo"
    copy_checkout(root)
    link_shared(workdir)
    return root


def test_env(root: Path) -> dict[str, str]:
    """The environment the copy's tests run in: its package first on the path, no bytecode written (a bug
    planted and restored within a second at the same size would otherwise be read back from a stale .pyc)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    return env


def imported_from(root: Path) -> str | None:
    """Where ``import ssd_eval`` resolves in the copy's environment, when that is not inside the copy."""
    done = subprocess.run([sys.executable, "-c", "import ssd_eval; print(ssd_eval.__file__)"], cwd=root,
                          env=test_env(root), capture_output=True, text=True)
    where = done.stdout.strip() or done.stderr.strip()
    if done.returncode == 0 and Path(where).resolve().is_relative_to(root.resolve()):
        return None
    return where


@dataclass
class PytestRun:
    code: int  # pytest's exit code (-1: timed out)
    passed: list[str]  # node ids
    failed: list[str]  # node ids that failed or erred, in order
    skipped: int
    tail: str  # the output's last lines


def run_tests(root: Path, tests: list[str], timeout: float, *, first_failure: bool = True) -> PytestRun:
    """``tests`` run by pytest in the copy; ``-rA`` lists every outcome (``-q`` on pyproject's ``-q`` leaves
    out the counts line)."""
    command = [sys.executable, "-m", "pytest", *(["-x"] if first_failure else []), "-q", "-p", "no:cacheprovider",
               "-rA", *tests]
    try:
        done = subprocess.run(command, cwd=root, env=test_env(root), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return PytestRun(-1, [], [], 0, f"timed out after {timeout:g} s")
    output = done.stdout + done.stderr

    def listed(words: str) -> list[str]:
        return re.findall(rf"^(?:{words}) (\S+?)(?: - .*)?$", output, flags=re.MULTILINE)

    skipped = sum(int(n) for n in re.findall(r"^SKIPPED \[(\d+)\]", output, flags=re.MULTILINE))
    return PytestRun(done.returncode, listed("PASSED"), listed("FAILED|ERROR"), skipped,
                     "\n".join(output.strip().splitlines()[-15:]))


def plant_and_test(root: Path, bug: Bug, timeout: float) -> Outcome:
    path = root / bug.file
    if not path.is_file():
        return Outcome(bug, "STALE", f"{bug.file} does not exist (the code moved): update the entry")
    original = path.read_text(encoding="utf-8")
    count = original.count(bug.old)
    if count != 1:
        return Outcome(bug, "STALE", f"the text to replace occurs {count} times in {bug.file}, not once")
    try:
        path.write_text(original.replace(bug.old, bug.new), encoding="utf-8")
        run = run_tests(root, list(bug.tests), timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    if run.code == 0:
        return Outcome(bug, "MISSED")
    if run.code == 1 and run.failed:
        return Outcome(bug, "CAUGHT", run.failed[0])
    return Outcome(bug, "ERROR", f"pytest exited {run.code}:\n{run.tail}")


def unique_tests(bugs: list[Bug]) -> list[str]:
    return list(dict.fromkeys(t for bug in bugs for t in bug.tests))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bugs", nargs="*", help="names of the bugs to plant (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="print the bugs, their files and tests")
    parser.add_argument("--workdir", type=Path, help="folder for the copy (default: a new temporary folder, removed "
                                                     "at the end)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run (default 600)")
    args = parser.parse_args(argv)
    if args.list:
        for bug in BUGS:
            print(f"{bug.name:42} {bug.file:22} {' '.join(t.split('/')[-1] for t in bug.tests)}")
        return 0
    by_name = {bug.name: bug for bug in BUGS}
    unknown = [name for name in args.bugs if name not in by_name]
    if unknown:
        parser.error(f"unknown bug(s) {', '.join(unknown)}; see --list")
    bugs = [by_name[name] for name in dict.fromkeys(args.bugs)] or list(BUGS)
    missing = sorted({t.split("::")[0] for t in unique_tests(bugs)} - {str(p.relative_to(REPO))
                                                                     for p in (REPO / "tests").glob("*.py")})
    if missing:
        print(f"no {', '.join(missing)} in {REPO}: update BUGS in tools/planted_bugs.py")
        return 2

    started = time.monotonic()
    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="ssd_eval-planted-"))
    try:
        root = prepare(workdir)
        elsewhere = imported_from(root)
        if elsewhere is not None:
            print(f"import ssd_eval in the copy {root} resolves to {elsewhere}, not to the copy")
            return 2
        tests = unique_tests(bugs)
        print(f"copy: {root}\nunmodified copy: running {len(tests)} node ids ...", flush=True)
        run = run_tests(root, tests, args.timeout, first_failure=False)
        if run.code != 0 or run.skipped or not run.passed:
            print(f"unmodified copy: pytest exited {run.code}; failing: {', '.join(run.failed) or 'none'}; "
                  f"skipped: {run.skipped}\n{run.tail}")
            print(f"the tests must pass (not skip) on the unmodified copy ({time.monotonic() - started:.0f} s)")
            return 1
        print(f"unmodified copy: {len(run.passed)} tests passed ("
              f"{time.monotonic() - started:.0f} s)", flush=True)
        outcomes = []
        for bug in bugs:
            outcome = plant_and_test(root, bug, args.timeout)
            outcomes.append(outcome)
            if outcome.status == "CAUGHT":
                print(f"CAUGHT {bug.name} -> {outcome.detail}", flush=True)
            elif outcome.status == "MISSED":
                print(f"MISSED {bug.name}", flush=True)
            else:
                print(f"{outcome.status} {bug.name}: {outcome.detail}", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    counts = {status: sum(o.status == status for o in outcomes) for status in ("CAUGHT", "MISSED", "STALE", "ERROR")}
    print(f"\n{len(outcomes)} bugs: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
          + f"; total {time.monotonic() - started:.0f} s")
    return 0 if counts["CAUGHT"] == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
