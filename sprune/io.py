"""Atomic file and directory writes: nothing half-written is ever left at the target path.

Everything is first written next to the target (same file system) and then renamed over it.

In a distributed run (torchrun, `sprune.training.distributed`) every process runs the same
code, so every process calls these writers at the same points: rank 0 writes the target,
the other ranks write to a private scratch place that is thrown away, and all of them wait
(a barrier) until the target is complete, so a process that reads it next finds it whole.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp / mkdtemp create private (0600 / 0700) entries; what lands at the target gets the
# modes an ordinary open() / mkdir() would give, so results stay readable by a lab group.
_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def _writer_rank() -> tuple[bool, bool]:
    """(this process writes targets, the run has several processes)."""
    if "torch.distributed" not in sys.modules:   # nothing distributed was ever started
        return True, False
    from sprune.training import distributed

    world = distributed.current()
    return world.is_main, world.world_size > 1


@contextlib.contextmanager
def _scratch(make_dir: bool) -> Iterator[Path]:
    """Where a process other than rank 0 writes what it does not keep."""
    with tempfile.TemporaryDirectory(prefix="sprune-rank-") as scratch:
        target = Path(scratch) / "out"
        if make_dir:
            target.mkdir()
        yield target
    _barrier()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    On an exception the temporary file is removed and `path` is left untouched.
    """
    writes, several = _writer_rank()
    if not writes:
        with _scratch(make_dir=False) as tmp:
            yield tmp
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(FILE_MODE)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    if several:
        _barrier()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it replaces `path`.

    An existing `path` is removed only after the new content is complete.
    """
    writes, several = _writer_rank()
    if not writes:
        with _scratch(make_dir=True) as tmp:
            yield tmp
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(DIR_MODE)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if several:
        _barrier()


def _barrier() -> None:
    from sprune.training import distributed

    distributed.barrier()


def read_json_object(path: str | os.PathLike, fix: str = "") -> dict:
    """Read a JSON file holding an object; an unreadable file, bad JSON or another
    top-level type is a `UserError` naming the file (and the line, for syntax errors),
    followed by `fix` (e.g. "re-run the stage that wrote it") when given."""
    import json

    from sprune.errors import UserError

    hint = f"; {fix}" if fix else ""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg}){hint}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: unreadable ({err.strerror or err}){hint}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object{hint}")
    return data
