"""Tests for ssd_eval.config.schema: YAML inheritance, --set overrides, validation, protocols."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssd_eval.config.load import config_from_dict, load_config, parse_override
from ssd_eval.config.protocols import protocol_base
from ssd_eval.config.schema import Config
from ssd_eval.errors import UserError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

BASE_YAML = """\
protocol: coco
dataset:
  annotations: ann.json
  images: imgs
preprocess:
  input_size: [1200, 1200]
  mean: [0.1, 0.2, 0.3]
runtime:
  batch_size: 1
  providers: [CPUExecutionProvider]
output:
  dir: results/{run}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path) -> Path:
    """A complete base config under a sub-folder, plus a child that extends it."""
    write(tmp_path / "cfg" / "common" / "base.yaml", BASE_YAML)
    return write(tmp_path / "cfg" / "child.yaml",
                 "extends: common/base.yaml\nvariant: ssd-12\nmodel:\n  path: m.onnx\n")


# ---------------------------------------------------------------- inheritance


def test_child_overrides_parent_and_nested_mappings_merge(tmp_path):
    write(tmp_path / "base.yaml", BASE_YAML)
    child = write(tmp_path / "child.yaml",
                  "extends: base.yaml\nvariant: v\nmodel: {path: m.onnx}\n"
                  "preprocess:\n  input_size: [300, 400]\nruntime:\n  batch_size: 4\n")
    config = load_config(child)
    assert config.variant == "v"
    assert config.preprocess.input_size == [300, 400]  # child wins
    assert config.preprocess.mean == [0.1, 0.2, 0.3]  # sibling key from the parent survives
    assert config.runtime.batch_size == 4
    assert config.runtime.providers == ["CPUExecutionProvider"]
    assert config.dataset.annotations == "ann.json"


def test_extends_is_relative_to_the_file_not_the_cwd(base, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(base)
    assert config.variant == "ssd-12"
    assert config.preprocess.mean == [0.1, 0.2, 0.3]


def test_three_level_inheritance(tmp_path):
    write(tmp_path / "a.yaml", BASE_YAML)
    write(tmp_path / "b.yaml", "extends: a.yaml\nvariant: b\nmodel: {path: b.onnx, parent: x}\n")
    c = write(tmp_path / "c.yaml", "extends: b.yaml\nvariant: c\nmodel: {path: c.onnx}\n")
    config = load_config(c)
    assert (config.variant, config.model.path, config.model.parent) == ("c", "c.onnx", "x")


def test_lists_replace_rather_than_merge(tmp_path):
    write(tmp_path / "base.yaml", BASE_YAML)
    child = write(tmp_path / "child.yaml",
                  "extends: base.yaml\nmodel: {path: m}\nruntime:\n  providers: [CUDAExecutionProvider]\n")
    assert load_config(child).runtime.providers == ["CUDAExecutionProvider"]


def test_source_records_the_loaded_file(base):
    assert load_config(base).source == str(base)


# ---------------------------------------------------------------- overrides


def test_set_override_int(base):
    config = load_config(base, ["runtime.batch_size=2"])
    assert config.runtime.batch_size == 2
    assert isinstance(config.runtime.batch_size, int)


def test_set_override_null_gives_none(tmp_path, base):
    sha = "a" * 64
    config = load_config(base, [f"model.sha256={sha}"])
    assert config.model.sha256 == sha
    assert load_config(base, [f"model.sha256={sha}", "model.sha256=null"]).model.sha256 is None


def test_set_override_list(base):
    config = load_config(base, ["runtime.providers=[CUDAExecutionProvider, CPUExecutionProvider]",
                                "preprocess.mean=[0.5, 0.5, 0.5]"])
    assert config.runtime.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert config.preprocess.mean == [0.5, 0.5, 0.5]


def test_set_override_float_and_string(base):
    config = load_config(base, ["postprocess.score_threshold=0.05", "variant=other", "model.published_map=0.1898"])
    assert config.postprocess.score_threshold == pytest.approx(0.05)
    assert config.variant == "other"
    assert config.model.published_map == pytest.approx(0.1898)


def test_set_override_int_accepted_for_float_field(base):
    config = load_config(base, ["postprocess.score_threshold=0"])
    assert config.postprocess.score_threshold == 0.0
    assert isinstance(config.postprocess.score_threshold, float)


def test_tuple_overrides(base):
    config = load_config(base, [("runtime.batch_size", 4), ("model.sha256", None), ("preprocess.input_size", [32, 64])])
    assert config.runtime.batch_size == 4
    assert config.model.sha256 is None
    assert config.preprocess.input_size == [32, 64]


def test_parse_override_values():
    assert parse_override("runtime.batch_size=2") == ("runtime.batch_size", 2)
    assert parse_override("model.sha256=null") == ("model.sha256", None)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=true") == ("a.b", True)
    assert parse_override("model.url=http://x/y?a=b") == ("model.url", "http://x/y?a=b")
    assert parse_override("a.b=") == ("a.b", None)


def test_parse_override_without_equals_is_user_error():
    with pytest.raises(UserError, match="key=value"):
        parse_override("runtime.batch_size")


def test_parse_override_empty_key_is_user_error():
    with pytest.raises(UserError, match="empty key"):
        parse_override("=3")


@pytest.mark.parametrize("child_yaml, key, words", [
    ("runtime:\n  batch_sise: 2\n", "'runtime.batch_sise'", "did you mean 'batch_size'"),
    ('runtime:\n  batch_size: "two"\n', "'runtime.batch_size'", "integer"),
    ("preprocess:\n  mean: [1, 2]\n", "'preprocess.mean'", "3 values"),
    ("pipeline: 5\n", "'pipeline'", "must be a mapping"),
    ("runtime:\n  session_config: {a: 1}\n", "'runtime.session_config'", "a string"),
    ("postprocess:\n  max_detections: some\n", "'postprocess.max_detections'", "'all'"),
    ("metrics:\n  backend: cocoapi\n", "'metrics.backend'", "'hotcoco'"),
    ("protocol: reference2\n", "'protocol'", "'mlperf-ssd'"),
], ids=["unknown-key", "wrong-type", "short-list", "not-a-mapping", "dict-of-strings", "literal-or-int", "backend",
        "protocol"])
def test_a_bad_value_in_a_file_names_the_file_and_the_key(tmp_path, child_yaml, key, words):
    write(tmp_path / "base.yaml", BASE_YAML)
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmodel: {path: m}\n" + child_yaml)
    with pytest.raises(UserError) as info:
        load_config(child)
    message = str(info.value)
    assert str(child) in message and key in message and words in message
    assert "\n" not in message


def test_unknown_top_level_key_in_parent_names_the_parent(tmp_path):
    parent = write(tmp_path / "base.yaml", BASE_YAML + "protocl: coco\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmodel: {path: m}\n")
    with pytest.raises(UserError) as info:
        load_config(child)
    assert str(parent) in str(info.value)
    assert "did you mean 'protocol'" in str(info.value)


def test_unknown_key_in_set(base):
    with pytest.raises(UserError) as info:
        load_config(base, ["runtime.batchsize=2"])
    message = str(info.value)
    assert "--set" in message
    assert "'runtime.batchsize'" in message
    assert "did you mean 'batch_size'" in message


def test_unknown_section_in_set(base):
    with pytest.raises(UserError, match="runtme"):
        load_config(base, ["runtme.batch_size=2"])


def test_bool_is_not_an_integer(base):
    with pytest.raises(UserError, match="runtime.batch_size"):
        load_config(base, [("runtime.batch_size", True)])


def test_wrong_type_from_set_names_set(base):
    with pytest.raises(UserError) as info:
        load_config(base, ["runtime.batch_size=two"])
    assert "--set" in str(info.value)
    assert "'runtime.batch_size'" in str(info.value)


def test_list_of_strings_where_numbers_expected(base):
    with pytest.raises(UserError, match="preprocess.std"):
        load_config(base, ["preprocess.std=[a, b, c]"])


def test_literal_choice_is_checked(base):
    with pytest.raises(UserError, match="'coco', 'inc', 'mlperf-ssd'"):
        load_config(base, ["protocol=standard"])
    with pytest.raises(UserError, match="preprocess.resize_backend"):
        load_config(base, ["preprocess.resize_backend=cv2"])


def test_nonpositive_values_are_rejected(base):
    for override in ("runtime.batch_size=0", "dataset.limit=0", "postprocess.max_detections=0",
                     "preprocess.std=[1, 0, 1]", "preprocess.input_size=[0, 10]", "runtime.providers=[]"):
        key = override.split("=")[0]
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            load_config(base, [override])


def test_missing_required_path(tmp_path):
    config = write(tmp_path / "c.yaml", BASE_YAML)  # no model.path
    with pytest.raises(UserError, match="model.path"):
        load_config(config)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "variant: x\nruntime:\n  providers: [CPUExecutionProvider\nmodel: {}\n")
    with pytest.raises(UserError) as info:
        load_config(bad)
    message = str(info.value)
    assert str(bad) in message
    assert "line 4" in message
    assert "malformed YAML" in message


def test_malformed_yaml_in_parent_names_the_parent(tmp_path):
    parent = write(tmp_path / "base.yaml", "a: [\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\n")
    with pytest.raises(UserError) as info:
        load_config(child)
    assert str(parent) in str(info.value)


def test_config_that_is_not_a_mapping(tmp_path):
    bad = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(bad)


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


def test_missing_parent_file(tmp_path):
    child = write(tmp_path / "child.yaml", "extends: nope.yaml\n")
    with pytest.raises(UserError, match="nope.yaml"):
        load_config(child)


def test_extends_loop(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    b = write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(UserError, match="loops"):
        load_config(b)


def test_extends_self(tmp_path):
    a = write(tmp_path / "a.yaml", "extends: a.yaml\n")
    with pytest.raises(UserError, match="loops"):
        load_config(a)


def test_extends_not_a_string(tmp_path):
    a = write(tmp_path / "a.yaml", "extends: [b.yaml]\n")
    with pytest.raises(UserError, match="extends"):
        load_config(a)


def test_invalid_sha256_rejected(base):
    for bad in ("abc", "g" * 64, "a" * 63):
        with pytest.raises(UserError, match="model.sha256"):
            load_config(base, [f"model.sha256={bad}"])


def test_config_from_dict_unknown_key():
    with pytest.raises(UserError, match="did you mean 'model'"):
        config_from_dict({"modle": {"path": "x"}})


# ---------------------------------------------------------------- protocols and output dir


COCO_SWITCHES = {"resize_backend": "pil", "skip_images_without_annotations": False, "crowd_as_ground_truth": False,
                 "max_detections": 100, "score_threshold": 0.0, "clip_boxes": True, "keep_inverted_boxes": False,
                 "exclude_categories": []}
INC_DROPPED = ["stop sign", "umbrella", "suitcase", "frisbee", "spoon", "remote", "cell phone", "microwave", "toaster"]


def test_coco_protocol_switches(base):
    config = load_config(base)
    assert config.switches() == COCO_SWITCHES
    assert config.protocol_label() == "coco"


def test_inc_protocol_switches(base):
    config = load_config(base, ["protocol=inc"])
    assert config.switches() == {"resize_backend": "opencv", "skip_images_without_annotations": True,
                                 "crowd_as_ground_truth": True, "max_detections": "all", "score_threshold": 0.0,
                                 "clip_boxes": False, "keep_inverted_boxes": True, "exclude_categories": INC_DROPPED}
    assert config.protocol_label() == "inc"


def test_mlperf_ssd_protocol_switches(base):
    config = load_config(base, ["protocol=mlperf-ssd"])
    assert config.switches() == {"resize_backend": "pil", "skip_images_without_annotations": True,
                                 "crowd_as_ground_truth": False, "max_detections": "all", "score_threshold": 0.0,
                                 "clip_boxes": False, "keep_inverted_boxes": True, "exclude_categories": []}
    assert config.protocol_label() == "mlperf-ssd"


def test_protocol_is_resolved_into_the_sections(base):
    config = load_config(base, ["protocol=inc"])
    assert config.preprocess.resize_backend == "opencv"
    assert config.dataset.skip_images_without_annotations is True
    assert config.postprocess.max_detections == "all"
    assert config.postprocess.clip_boxes is False
    assert config.metrics.exclude_categories == INC_DROPPED
    assert config.to_dict()["postprocess"]["clip_boxes"] is False


def test_reference_is_an_alias_of_inc(base, caplog):
    config = load_config(base, ["protocol=reference"])
    assert config.protocol == "inc"
    assert config.protocol_label() == "inc"
    assert "'reference' is an old name for 'inc'" in caplog.text


def test_a_protocol_label_with_switched_settings_keeps_its_base_protocol(base):
    label = load_config(base, ["protocol=inc", "preprocess.resize_backend=pil"]).protocol_label()
    assert label.startswith("inc+") and protocol_base(label) == "inc"
    assert [protocol_base(name) for name in ("inc", "coco", "mlperf-ssd")] == ["inc", "coco", "mlperf-ssd"]


def test_published_protocol_comes_from_the_model(base):
    config = load_config(base, ["protocol=published", "model.published_protocol=mlperf-ssd"])
    assert config.protocol == "mlperf-ssd"
    assert config.protocol_label() == "mlperf-ssd"
    with pytest.raises(UserError, match="needs model.published_protocol"):
        load_config(base, ["protocol=published"])


def test_every_zoo_variant_names_its_published_protocol():
    expected = {"ssd-10": ("mlperf-ssd", 0.195), "ssd-12": ("inc", 0.1898), "ssd-12-int8": ("inc", 0.1892),
                "ssd-12-qdq": ("inc", 0.1863)}
    for variant, (protocol, published) in expected.items():
        config = load_config(Path("configs") / f"{variant}.yaml", ["protocol=published"])
        assert (config.protocol, config.model.published_map) == (protocol, published)
    assert load_config(Path("configs/ssd-10.yaml")).model.source_map == 0.19578


def test_overriding_one_switch_gives_mixed_label(base):
    config = load_config(base, ["protocol=inc", "preprocess.resize_backend=pil"])
    assert config.switches()["resize_backend"] == "pil"
    assert config.switches()["crowd_as_ground_truth"] is True
    assert config.protocol_label() == "inc+resize_backend=pil"


@pytest.mark.parametrize("override, label", [
    ("postprocess.max_detections=all", "coco+max_detections=all"),
    ("postprocess.max_detections=50", "coco+max_detections=50"),
    ("postprocess.clip_boxes=false", "coco+clip_boxes=False"),
    ("postprocess.score_threshold=0.05", "coco+score_threshold=0.05"),
    ("metrics.exclude_categories=[toaster]", "coco+exclude_categories=[toaster]"),
])
def test_each_new_switch_can_be_set_alone(base, override, label):
    assert load_config(base, [override]).protocol_label() == label


@pytest.mark.parametrize("override, key", [
    ("postprocess.max_detections=0", "postprocess.max_detections"),
    ("postprocess.max_detections=some", "postprocess.max_detections"),
    ("postprocess.score_threshold=.nan", "postprocess.score_threshold"),
    ("preprocess.mean=[0.5, .nan, 0.5]", "preprocess.mean"),
    ("preprocess.std=[0.5, .inf, 0.5]", "preprocess.std"),
    ("metrics.exclude_categories=[toaster, toaster]", "metrics.exclude_categories"),
])
def test_bad_switch_values_name_the_key(base, override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        load_config(base, [override])


def test_explicit_switch_equal_to_preset_keeps_plain_label(base):
    config = load_config(base, ["protocol=inc", "preprocess.resize_backend=opencv"])
    assert config.protocol_label() == "inc"


def test_coco_with_one_switch_changed(base):
    config = load_config(base, ["dataset.skip_images_without_annotations=true"])
    assert config.protocol_label() == "coco+skip_images_without_annotations=True"


def test_out_dir_for_each_protocol(base):
    assert load_config(base).out_dir == Path("results/ssd-12")
    assert load_config(base, ["protocol=inc"]).out_dir == Path("results/ssd-12-inc")
    assert load_config(base, ["protocol=mlperf-ssd"]).out_dir == Path("results/ssd-12-mlperf-ssd")


def test_out_dir_placeholders(base):
    config = load_config(base, ["output.dir=out/{variant}/{protocol}", "protocol=inc"])
    assert config.out_dir == Path("out/ssd-12/inc")


# ---------------------------------------------------------------- hashing


def test_config_sha256_is_stable_and_tracks_values(base):
    first = load_config(base).sha256()
    assert len(first) == 64
    assert load_config(base).sha256() == first
    assert load_config(base, ["runtime.batch_size=2"]).sha256() != first


def test_to_dict_omits_source(base):
    data = load_config(base).to_dict()
    assert "source" not in data
    assert data["runtime"]["batch_size"] == 1


def test_default_config_is_a_config():
    assert isinstance(Config(), Config)


# ---------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    overrides = []
    if path.name == "base.yaml":  # the base names no model
        overrides = ["model.path=x.onnx"]
    config = load_config(path, overrides)
    assert config.protocol == "coco"
    assert config.model.input_name == "image"
    assert config.preprocess.input_size == [1200, 1200]


REAL_VARIANTS = {
    "ssd-10": (80363696, None, 10, 0.195, None),
    "ssd-12": (80366315, "5ec1e058e666ef980a6213ac40088877865aafb2b6676b9af204b3828e4bb9d5", 12, 0.1898, None),
    "ssd-12-int8": (20484185, "687696a719e57bb86aabb5fe44b0262cabd5bf26bd82e2698eb14753647632c4", 12, 0.1892,
                    "ssd-12"),
    "ssd-12-qdq": (20479718, "a287de043788b325b8a7209d1193377d9e7f78fe8572666da485710284fb8727", 12, 0.1863,
                   "ssd-12"),
}


@pytest.mark.parametrize("variant", sorted(REAL_VARIANTS))
def test_real_variants_carry_published_facts(variant):
    size, sha, opset, published, parent = REAL_VARIANTS[variant]
    config = load_config(CONFIGS / f"{variant}.yaml")
    assert config.variant == variant
    assert config.model.url.endswith(f"/ssd/model/{variant}.onnx")
    assert config.model.url.startswith("https://github.com/onnx/models/")
    assert config.model.size == size
    assert config.model.sha256 == sha
    assert config.model.opset == opset
    assert config.model.published_map == published
    assert config.model.parent == parent
    assert config.out_dir == Path(f"results/{variant}")


def test_sample_variants_have_sample_parent():
    assert load_config(CONFIGS / "sample-int8.yaml").model.parent == "sample"
    assert load_config(CONFIGS / "sample-qdq.yaml").model.parent == "sample"
    assert load_config(CONFIGS / "sample.yaml").dataset.annotations_url is None


def test_empty_child_section_inherits_the_parent_section(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {path: m.onnx}\ndataset: {annotations: a.json, images: imgs}\n"
                                        "runtime: {batch_size: 2}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ndataset:\n  # annotations: other.json\nruntime:\n")
    config = load_config(tmp_path / "child.yaml")
    assert config.dataset.annotations == "a.json"
    assert config.runtime.batch_size == 2


def test_override_origin_is_named_in_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("model: {path: m.onnx}\ndataset: {annotations: a.json, images: imgs}\n")
    with pytest.raises(UserError, match="^--limit: key 'dataset.limit'"):
        load_config(tmp_path / "c.yaml", [("dataset.limit", 0, "--limit")])


# ---------------------------------------------------------------- issue 11: partial runs, dicts that extend a file


def test_partial_runs_get_their_own_folder_named_after_what_differs(base, tmp_path, monkeypatch):
    import hashlib

    monkeypatch.chdir(tmp_path)
    model = write(tmp_path / "other.onnx", "not really a model, but bytes to hash")
    sha12 = hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    annotations = write(tmp_path / "other.json", "{}")
    ann12 = hashlib.sha256(annotations.read_bytes()).hexdigest()[:12]
    images12 = hashlib.sha256(str((tmp_path / "pics").resolve()).encode()).hexdigest()[:12]
    assert load_config(base).partial_parts() == []
    assert load_config(base, [("dataset.limit", 3, "--limit")]).out_dir == Path("results/ssd-12@limit3")
    assert load_config(base, [("model.path", str(model), "--model")]).out_dir == Path(f"results/ssd-12@model-{sha12}")
    other_annotations = load_config(base, [f"dataset.annotations={annotations}"])
    assert other_annotations.out_dir == Path(f"results/ssd-12@annotations-{ann12}")
    both = load_config(base, ["protocol=inc", ("dataset.images", "pics", "--images"), ("dataset.limit", 2, "--limit")])
    assert both.out_dir == Path(f"results/ssd-12-inc@limit2@images-{images12}")
    assert [description for _, description in both.partial_parts()] == ["limit 2", "images pics"]
    # the value the file already holds (spelled another way) is no override; --out wins over the rule
    assert load_config(base, [("model.path", "./m.onnx", "--model")]).out_dir == Path("results/ssd-12")
    out = load_config(base, [("dataset.limit", 3, "--limit"), ("output.dir", "mine", "--out")])
    assert out.out_dir == Path("mine") and out.partial_parts() == [("limit3", "limit 3")]
    # a config that names no model leaves it to --model: nothing differs
    no_model = load_config(tmp_path / "cfg" / "common" / "base.yaml", [("model.path", str(model), "--model")])
    assert no_model.partial_parts() == [] and no_model.out_dir == Path("results/custom")
    # the folder rule is not part of the config's identity
    assert "overridden" not in load_config(base, [("model.path", str(model), "--model")]).to_dict()


def test_run_name_with_partial_parts():
    from ssd_eval.config.schema import run_name

    assert run_name("sample", "coco") == "sample"
    assert run_name("sample", "coco", None, ["limit3"]) == "sample@limit3"
    assert run_name("ssd-12", "inc", None, ["limit3", "model-abc"]) == "ssd-12-inc@limit3@model-abc"


def test_a_mapping_can_extend_a_config_file_relative_to_the_current_directory(base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_from_dict({"extends": "cfg/child.yaml", "runtime": {"batch_size": 2}, "dataset": {"limit": 4}})
    assert config.variant == "ssd-12" and config.model.path == "m.onnx"
    assert config.runtime.batch_size == 2 and config.preprocess.mean == [0.1, 0.2, 0.3]
    assert config.out_dir == Path("results/ssd-12@limit4")
    swapped = config_from_dict({"extends": "cfg/child.yaml", "model": {"path": "n.onnx"}})
    assert [part for part, _ in swapped.partial_parts()] == ["model-n.onnx"]  # no such file: named by its name


def test_a_mapping_extending_a_missing_file_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^<dict>: extends 'configs/nope.yaml': config file not found \(a mapping's "
                                        r"'extends' is relative to the current directory, "):
        config_from_dict({"extends": "configs/nope.yaml"})
    with pytest.raises(UserError, match="unknown key 'modle'"):
        config_from_dict({"extends": str(CONFIGS / "sample.yaml"), "modle": {}})


@pytest.mark.parametrize("value", [0, -5, ".nan"])
def test_progress_interval_must_be_positive(base, value):
    with pytest.raises(UserError, match="pipeline.progress_interval_s"):
        load_config(base, [f"pipeline.progress_interval_s={value}"])
