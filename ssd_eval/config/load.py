"""Config files: YAML with ``extends: parent.yaml`` (relative to the file; mappings merge key by key, child over
parent, anything else replaces) and ``--set a.b=value`` overrides (YAML values, applied last), built into the
dataclasses, values checked, protocol resolved. Relative paths in a config are relative to the current directory."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import logging
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from ssd_eval.config.protocols import PROTOCOL_ALIASES, PUBLISHED, SWITCH_KEYS
from ssd_eval.config.schema import KERNEL_CLASSES, PARTIAL_KEYS, SCORING_BACKENDS, VARIANT_NAME, Config
from ssd_eval.errors import UserError, quote
from ssd_eval.loaders import load_yaml
from ssd_eval.utils import flatten_dotted, is_int

log = logging.getLogger(__name__)

NAME_OPTION = "--name"
"""The origin of an override that names the run (``("variant", NAME, "--name")``): a variant of its own."""


def overridden_keys(file_data: dict[str, Any], merged: dict[str, Any]) -> tuple[str, ...]:
    """The PARTIAL_KEYS whose value in ``merged`` differs from ``file_data`` (the config files alone), paths
    compared resolved; never one the files leave unset (a config that leaves the model to ``--model``)."""
    changed = []
    file_values, merged_values = flatten_dotted(file_data), flatten_dotted(merged)
    for key in PARTIAL_KEYS:
        before, after = file_values.get(key), merged_values.get(key)
        if before in (None, "") or before == after:
            continue
        if isinstance(before, str) and isinstance(after, str) and Path(before).resolve() == Path(after).resolve():
            continue
        changed.append(key)
    return tuple(changed)


def resolve_protocol(config: Config, origin: str = "<config>") -> Config:
    """``config`` with its protocol named plainly (aliases and ``published`` resolved) and every switch set,
    so every consumer reads the values in force."""
    if config.protocol == PUBLISHED:
        if config.model.published_protocol is None:
            raise UserError(f"{origin}: protocol 'published' needs model.published_protocol, which variant "
                            f"{config.variant!r} does not set (it has no published number)")
        config.protocol = config.model.published_protocol
    elif config.protocol in PROTOCOL_ALIASES:
        log.warning("protocol %r is an old name for %r (see docs/PROTOCOLS.md)", config.protocol,
                    PROTOCOL_ALIASES[config.protocol])
        config.protocol = PROTOCOL_ALIASES[config.protocol]
    for name, value in config.switches().items():
        section, attribute = SWITCH_KEYS[name].split(".")
        setattr(getattr(config, section), attribute, list(value) if isinstance(value, list) else value)
    return config


def load_config(path: str | Path, overrides: Sequence[str | tuple] = ()) -> Config:
    """Load a YAML config (following ``extends``), apply overrides, validate. Each override is ``"a.b=value"``,
    a ``(key, value)`` pair, or a ``(key, value, origin)`` triple whose origin (e.g. ``"--limit"``) errors name."""
    path = Path(path)
    merged, origins = _load_merged(path, seen=())
    file_data = copy.deepcopy(merged)
    named_by = None
    for item in overrides:
        if isinstance(item, str):
            item = parse_override(item)
        key, value, origin = item if len(item) == 3 else (*item, "--set")
        if origin == NAME_OPTION:
            check_variant_name(value)
            key, named_by = "variant", NAME_OPTION
        _set_dotted(merged, key, value, origin=origin, origins=origins)
    config = _config_over_file(path, file_data, merged, origins)
    config.named_by = named_by
    return config


def check_variant_name(name: Any, configs_dir: str | Path | None = None) -> None:
    """UserError unless ``name`` can name a variant (schema.VARIANT_NAME); with ``configs_dir``, also when a
    config there already is that variant (its results and baseline are the config's)."""
    if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
        shown = name if isinstance(name, str) else quote(name)
        raise UserError(f"--name {shown}: a variant name is letters, digits, '.', '_' and '-' (the name of "
                        "its results folder and baseline file), starting with a letter or digit")
    if configs_dir is not None and name in variant_configs(configs_dir):
        raise UserError(f"--name {name}: {Path(configs_dir) / (name + '.yaml')} is that variant already; "
                        "give your own model or data a name of its own")


def config_path(text: str | Path, configs_dir: str | Path = "configs") -> Path:
    """The config file an argument names: a path (with a '/', a .yaml or .yml suffix, or an existing file) as it
    is, a bare variant name as ``<configs_dir>/<name>.yaml``; UserError listing the variants when it has none."""
    text = str(text)
    path = Path(text)
    if "/" in text or path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    named = Path(configs_dir) / f"{text}.yaml"
    if not named.is_file():
        known = ", ".join(variant_configs(configs_dir)) if Path(configs_dir).is_dir() else "none"
        raise UserError(f"{text!r}: no such variant ({named} not found; variants: {known}) and no such "
                        "config file")
    return named


def variant_configs(configs_dir: str | Path = "configs") -> dict[str, Path]:
    """The ``*.yaml`` files of ``configs_dir`` whose ``variant`` is their own file name (not shared bases such
    as base.yaml), by variant, sorted."""
    found = {}
    for path in sorted(Path(configs_dir).glob("*.yaml"), key=lambda p: p.stem):
        try:
            data = load_yaml(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(f"{path}: cannot read config: {str(exc).splitlines()[0]}") from None
        if isinstance(data, dict) and data.get("variant") == path.stem:
            found[path.stem] = path
    return found


def config_from_dict(
    data: dict[str, Any], *, origins: dict[str, str] | None = None, default_origin: str = "<dict>"
) -> Config:
    """Validate a plain mapping into a Config; errors name the offending key and its file. A mapping may name a
    config file to start from with ``extends`` (relative to the current directory): its keys apply over the file's."""
    if isinstance(data, dict) and "extends" in data:
        return _config_extending_a_file(data, default_origin)
    origins = origins or {}
    config = _build(Config, data, prefix="", origins=origins, default_origin=default_origin)
    _check_values(config, origins, default_origin)
    return resolve_protocol(config, origins.get("protocol", default_origin))


def _config_extending_a_file(data: dict[str, Any], origin: str) -> Config:
    """config_from_dict of a mapping with ``extends``: the file's config with the mapping's keys over it."""
    parent = data["extends"]
    if not isinstance(parent, (str, Path)) or not str(parent):
        raise UserError(f"{origin}: key 'extends' must be the path of a config file, got {quote(parent)}")
    path = Path(parent)
    if not path.is_file():
        raise UserError(f"{origin}: extends {str(parent)!r}: config file not found (a mapping's 'extends' is "
                        f"relative to the current directory, {Path.cwd()})")
    own = copy.deepcopy({key: value for key, value in data.items() if key != "extends"})
    merged, origins = _load_merged(path, seen=())
    file_data = copy.deepcopy(merged)
    _deep_merge(merged, own, Config, origin=origin, origins=origins)
    return _config_over_file(path, file_data, merged, origins)


def _config_over_file(path: Path, file_data: dict, merged: dict, origins: dict[str, str]) -> Config:
    """The Config of ``merged``: file ``path``'s keys (``file_data``) with the caller's over them."""
    config = config_from_dict(merged, origins=origins, default_origin=str(path))
    config.source = str(path)
    config.overridden = overridden_keys(file_data, merged)
    return config


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``a.b=value`` into the dotted key and the YAML-parsed value."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set runtime.batch_size=2")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {item!r}: empty key")
    try:
        value = load_yaml(raw, f"--set {key}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _load_merged(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """The mapping of config file ``path`` merged over its ``extends`` chain, and the file each key came from."""
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    resolved = path.resolve()
    if resolved in seen:
        raise UserError(f"{path}: 'extends' loops back to itself")
    try:
        data = load_yaml(path.read_text(), str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{where}: malformed YAML: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config: {exc}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a mapping of keys, not {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent is not None and not isinstance(parent, str):
        raise UserError(f"{path}: key 'extends' must be a file name")
    merged, origins = ({}, {}) if parent is None else _load_merged(path.parent / parent, seen + (resolved,))
    _deep_merge(merged, data, Config, origin=str(path), origins=origins)
    return merged, origins


def _deep_merge(base: dict, update: dict, cls: Any, *, origin: str, origins: dict[str, str], prefix: str = "") -> None:
    """Merge ``update`` (from ``origin``) over ``base`` key by key; UserError for a key the dataclass ``cls``
    lacks (None: inside a mapping field such as runtime.session_config, any key)."""
    fields = _public_fields(cls) if cls is not None else {}
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if cls is not None and key not in fields:
            raise UserError(f"{origin}: unknown key {dotted!r}{_suggest(str(key), fields)}")
        if value is None and isinstance(base.get(key), dict):
            continue  # a section whose keys are all commented out inherits the parent's
        if isinstance(value, dict):
            if not isinstance(base.get(key), dict):
                base[key] = {}
                origins[dotted] = origin
            _deep_merge(base[key], value, _section(cls, key), origin=origin, origins=origins, prefix=dotted + ".")
        else:
            base[key] = value
            origins[dotted] = origin


def _set_dotted(data: dict, key: str, value: Any, *, origin: str, origins: dict[str, str]) -> None:
    cls: Any = Config
    for part in key.split("."):
        if cls is None:  # inside a mapping field (runtime.session_config): any name
            break
        fields = _public_fields(cls)
        if part not in fields:
            raise UserError(f"{origin}: unknown key {key!r}{_suggest(part, fields)}")
        cls = _section(cls, part)
    *parents, last = key.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    origins[key] = origin


def _section(cls: Any, key: str) -> Any:
    """The dataclass of field ``key`` of dataclass ``cls`` (None for any other field, or when ``cls`` is None)."""
    hint = typing.get_type_hints(cls)[key] if cls is not None else None
    return hint if dataclasses.is_dataclass(hint) else None


def _suggest(name: str, fields: dict) -> str:
    close = difflib.get_close_matches(name, list(fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"


def _public_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _build(cls: type, data: Any, *, prefix: str, origins: dict[str, str], default_origin: str) -> Any:
    """An instance of dataclass ``cls`` from mapping ``data``, each value checked against its field's type."""
    data = {} if data is None else data  # None: a section whose keys are all commented out
    if not isinstance(data, dict):
        where = origins.get(prefix.rstrip("."), default_origin)
        raise UserError(f"{where}: key {prefix.rstrip('.')!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = _public_fields(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        where = origins.get(dotted, default_origin)
        if key not in fields:
            raise UserError(f"{where}: unknown key {dotted!r}{_suggest(str(key), fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, prefix=dotted + ".", origins=origins, default_origin=default_origin)
            continue
        try:
            kwargs[key] = _match(value, hint)
        except ValueError:
            raise UserError(f"{where}: key {dotted!r} must be {_describe(hint)}, got {quote(value)}") from None
    return cls(**kwargs)


def _match(value: Any, hint: Any) -> Any:
    """``value`` as a field of type ``hint`` holds it (an int where a float is expected becomes a float);
    ValueError when it is not of that type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            with contextlib.suppress(ValueError):
                return _match(value, arg)
    elif origin is list and isinstance(value, list):
        return [_match(item, args[0]) for item in value]
    elif origin is dict and isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _match(item, args[1]) for key, item in value.items()}
    elif origin is Literal and value in args:
        return value
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is int and is_int(value):
        return value
    elif hint in (bool, str, type(None)) and isinstance(value, hint):
        return value
    raise ValueError(value)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        text = " or ".join(_describe(a) for a in args if a is not type(None))
        return text + " or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}"
    if origin is dict:
        return f"a mapping of names to values ({_describe(args[1])})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _check_values(config: Config, origins: dict[str, str], default_origin: str) -> None:
    """UserError naming the key and its origin for a value its type allows but a run cannot use."""
    def fail(key: str, message: str) -> None:
        raise UserError(f"{origins.get(key, default_origin)}: key {key!r} {message}")

    def positive(*values: float) -> bool:
        return all(math.isfinite(value) and value > 0 for value in values)

    pre, post, boot, pipe = config.preprocess, config.postprocess, config.metrics.bootstrap, config.pipeline
    if len(pre.input_size) != 2 or min(pre.input_size) <= 0:
        fail("preprocess.input_size", f"must be [height, width] of positive integers, got {pre.input_size}")
    if len(pre.mean) != 3 or not all(map(math.isfinite, pre.mean)):
        fail("preprocess.mean", f"must have 3 values (R, G, B), all finite, got {pre.mean}")
    if len(pre.std) != 3 or not positive(*pre.std):
        fail("preprocess.std", f"must have 3 finite positive values (R, G, B), got {pre.std}")
    if not positive(pre.scale):
        fail("preprocess.scale", f"must be a finite positive number, got {pre.scale}")
    if isinstance(post.max_detections, int) and post.max_detections <= 0:
        fail("postprocess.max_detections", "must be a positive number of detections or 'all'")
    if post.score_threshold is not None and not math.isfinite(post.score_threshold):
        fail("postprocess.score_threshold", f"must be a finite number, got {post.score_threshold}")
    if post.box_scale is not None and (len(post.box_scale) != 2 or not positive(*post.box_scale)):
        fail("postprocess.box_scale", f"must be [width, height], two finite positive numbers, or null, "
                                      f"got {post.box_scale}")
    if config.model.published_int8_path not in (None, *KERNEL_CLASSES):
        fail("model.published_int8_path", f"must be one of {', '.join(KERNEL_CLASSES)} or null, "
                                          f"got {quote(config.model.published_int8_path)}")
    if config.metrics.backend not in SCORING_BACKENDS:
        fail("metrics.backend", f"must be one of {', '.join(repr(b) for b in SCORING_BACKENDS)}, "
                                f"got {quote(config.metrics.backend)}")
    excluded = config.metrics.exclude_categories or []
    if len(set(excluded)) != len(excluded):
        fail("metrics.exclude_categories", "names a category twice")
    if config.runtime.batch_size <= 0:
        fail("runtime.batch_size", "must be positive")
    if config.dataset.limit is not None and config.dataset.limit <= 0:
        fail("dataset.limit", "must be a positive number of images")
    if config.dataset.subset is not None:
        from ssd_eval.data.subsets import subset_file
        try:
            subset_file(config.dataset.subset)
        except UserError as exc:
            fail("dataset.subset", f"names no subset: {exc}")
        if config.dataset.limit is not None:
            fail("dataset.subset", f"({config.dataset.subset}) and dataset.limit ({config.dataset.limit}) are both "
                                   "set: a subset is a fixed list of images; drop one of them")
    if boot.replicates < 0 or boot.seed < 0:
        fail("metrics.bootstrap.replicates", "and metrics.bootstrap.seed must not be negative")
    if not 0 < boot.level < 1:
        fail("metrics.bootstrap.level", f"must be between 0 and 1 (e.g. 0.95), got {boot.level}")
    if boot.max_images is not None and boot.max_images <= 0:
        fail("metrics.bootstrap.max_images", "must be a positive number of images or null")
    if pipe.workers < 0 or pipe.prefetch < 0:
        fail("pipeline.workers", "and pipeline.prefetch must not be negative")
    if not positive(pipe.progress_interval_s):
        fail("pipeline.progress_interval_s", f"must be a positive number of seconds, got {pipe.progress_interval_s}")
    if not config.runtime.providers:
        fail("runtime.providers", "must name at least one execution provider")
    for key in ("model.sha256", "dataset.annotations_zip_sha256", "dataset.images_zip_sha256"):
        sha = config.value_at(key)
        if sha is not None and not re.fullmatch("[0-9a-fA-F]{64}", sha):
            fail(key, f"must be 64 hex digits or null, got {quote(sha)}")
    for key, option in (("model.path", "--model PATH"), ("dataset.annotations", "--annotations PATH"),
                        ("dataset.images", "--images DIR")):
        if not config.value_at(key):
            fail(key, f"must be set (or pass {option})")
