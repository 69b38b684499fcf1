"""Typed YAML configs: unknown keys and wrong types name the file and key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from sprune.config import load_config
from sprune.errors import UserError
from sprune.training import TrainConfig


@dataclass
class Inner:
    size: int = 2
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    mode: Literal["a", "b"] = "a"
    rate: float = 0.5
    inner: Inner = field(default_factory=Inner)
    tag: str | None = None


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_nested_values_and_overrides(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "mode: b\nrate: 1\ninner: {size: 3, names: [x]}\n"),
                      overrides=["inner.size=7", "tag=hello"])
    assert cfg == Outer(mode="b", rate=1.0, inner=Inner(size=7, names=["x"]), tag="hello")


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # PyYAML reads `1e-3` as a string; a float field takes it (from the file and from --set).
    assert load_config(Outer, write(tmp_path, "rate: 1e-3\n")).rate == 1e-3
    assert load_config(Outer, write(tmp_path, ""), overrides=["rate=2e-4"]).rate == 2e-4


@pytest.mark.parametrize("text, message", [
    ("rat: 1\n", "unknown key 'rat'"),
    ("inner: {sise: 1}\n", "unknown key 'sise'"),
    ("mode: c\n", "'c' is not one of"),
    ("rate: fast\n", "rate: expected a number"),
    ("rate: .nan\n", "rate: expected a finite number"),
    ("inner: {size: 1.5}\n", "inner.size: expected an integer"),
    ("- a\n", "expected a mapping"),
    ("a: [\n", "invalid YAML"),
])
def test_bad_configs_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as err:
        load_config(Outer, path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
