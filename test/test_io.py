"""Atomic writes leave either the old content or the new one, never a half-written target."""
from __future__ import annotations

import pytest

from sprune.io import atomic_dir, atomic_path, atomic_write_text


def test_atomic_write_replaces_content(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_path_keeps_old_content_on_error(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_atomic_dir_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "dir"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


@pytest.mark.parametrize("content,message", [
    ('{"a": 1,\n', r"x.json:2: invalid JSON .*; re-run it$"),
    ("[1, 2]", r"x.json: expected a JSON object; re-run it$"),
    (None, r"x.json: unreadable .*; re-run it$"),
])
def test_read_json_object_names_the_file_and_the_fix(tmp_path, content, message):
    from sprune.errors import UserError
    from sprune.io import read_json_object
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_json_object(path, fix="re-run it")
    if content is None:
        path.write_text('{"ok": true}')
        assert read_json_object(path) == {"ok": True}


def test_atomic_writes_get_the_modes_of_ordinary_files(tmp_path):
    import stat

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "result.json", "{}")
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == stat.S_IMODE(
        plain.stat().st_mode)
    (tmp_path / "plain_dir").mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("y")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "plain_dir").stat().st_mode)
