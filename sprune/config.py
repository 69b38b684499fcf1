"""Typed YAML configs: dataclasses filled from YAML, where unknown keys are errors.

    @dataclass
    class TrainConfig:
        lr: float = 5e-5
        ...
    cfg = load_config(TrainConfig, "conf/train.yaml")             # whole file
    cfg = load_config(ExperimentConfig, "conf/a.yaml", overrides=["train.lr=1e-4"])

A file may start from another one: a top-level `base: ../../../../conf/prune/omp.yaml`
(relative to the file that names it) loads that file first and lays this file's keys over it
(see `load_yaml`), so a recipe's conf/ file holds only what differs from the shared conf/.

Nested dataclasses map to nested YAML mappings. Values are checked against the field types
(int, float, str, bool, Optional, list, dict, Literal, nested dataclasses). A wrong key or type
raises `UserError` naming the file and the dotted key, and listing the keys that are allowed.
"""
from __future__ import annotations

import math

import dataclasses
import os
import types
import typing
from typing import Any, Literal, Sequence, TypeVar, get_args, get_origin, get_type_hints

import yaml

from sprune.errors import UserError

T = TypeVar("T")


BASE_KEY = "base"


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping; a missing file, a syntax error or a non-mapping is a `UserError`.

    A top-level `base: FILE` (relative to the file that names it, or absolute) loads FILE
    first, itself resolved the same way (a base may have its own base), then this file's
    keys override it: mappings merge key by key, lists and scalars are replaced. A missing
    base, a base that is not a string and a cycle of bases are `UserError`s.
    """
    return _load_with_bases(str(path), ())


def _read_yaml(path: str) -> dict:
    """One YAML file's own top-level mapping (no `base:` resolution)."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _load_with_bases(path: str, chain: tuple[tuple[str, str], ...]) -> dict:
    """`path`'s mapping over its bases; `chain` holds (real path, shown name) of the files
    that named it as their base, to catch cycles."""
    data = _read_yaml(path)
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise UserError(f"{path}: base: {base!r} is not a file name; write `base: FILE.yaml` "
                        "(a path relative to this file) or remove the key")
    real = os.path.realpath(path)   # relative to the file itself, also through a symlink
    target = os.path.join(os.path.dirname(real), os.path.expanduser(base))
    if not os.path.isfile(target):
        raise UserError(f"{path}: base {base} does not exist; fix the path (relative to this "
                        "file)")
    target_real = os.path.realpath(target)
    seen = chain + ((real, path),)
    reals = [r for r, _ in seen]
    if target_real in reals:
        start = reals.index(target_real)
        loop = " -> ".join([shown for _, shown in seen[start:]] + [seen[start][1]])
        raise UserError(f"{path}: base {base} makes a cycle ({loop}); remove the base: key "
                        "that points back")
    return merge_mappings(_load_with_bases(_shown_path(target_real), seen), data)


def _shown_path(real: str) -> str:
    """How a base file is named in messages: relative to the current directory when that is
    short, else absolute."""
    try:
        rel = os.path.relpath(real)
    except ValueError:   # another drive (Windows)
        return real
    return rel if rel.count(os.pardir + os.sep) <= 4 else real


def merge_mappings(base: dict, override: dict) -> dict:
    """`override` over `base`: nested mappings merged key by key, any other value (list,
    scalar, null) replaces the base's. Returns a new mapping; the inputs are not changed."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = value
    return out


def _float_from_yaml_string(value: str, where: str) -> float:
    """YAML 1.1 (PyYAML) reads `1e-3` as a string (it wants `1.0e-3`); accept what Python
    reads as a float so a learning rate can be written the usual way."""
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{where}: expected a number, got {value!r}") from None


def _check_value(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, where)
            except UserError as err:
                errors.append(str(err))
        raise UserError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping for {hint.__name__}")
        return from_dict(hint, value, where)
    if origin in (list, Sequence, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        args = get_args(hint)
        item = args[0] if args else Any
        out = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple or hint is tuple else out
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        args = get_args(hint)
        vt = args[1] if args else Any
        return {k: _check_value(v, vt, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            value = _float_from_yaml_string(value, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are `UserError`s.

    `where` prefixes error messages (e.g. "conf/train.yaml" or "conf/train.yaml: train").
    """
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (known keys: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check_value(value, hints[name], f"{where}: {name}" if ":" not in where
                                    else f"{where}.{name}")
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where}: required key '{missing[0]}' is missing")
    return cls(**kwargs)


def apply_overrides(data: dict, overrides: Sequence[str], where: str) -> dict:
    """Apply `a.b=value` overrides (value parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{where}: override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{where}: override '{item}': '{part}' is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: Sequence[str] = ()) -> T:
    """Load dataclass `cls` from a YAML file (or defaults when `path` is None) plus overrides."""
    data = load_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "config"
    apply_overrides(data, overrides, where)
    return from_dict(cls, data, where)


def to_dict(cfg: Any) -> dict:
    """A dataclass config as a plain mapping (for saving beside results)."""
    return dataclasses.asdict(cfg)
