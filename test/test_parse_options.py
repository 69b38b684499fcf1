"""utils/parse_options.sh: Kaldi option semantics for bash scripts."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

PARSE_OPTIONS = Path(__file__).resolve().parents[1] / "utils" / "parse_options.sh"

SCRIPT = f"""#!/usr/bin/env bash
set -euo pipefail
stage=1
foo_bar=default
use_gpu=false
empty=
help_message="Usage: demo.sh [options] <in> <out>
  --stage N   first stage"
. {PARSE_OPTIONS}
echo "stage=$stage"
echo "foo_bar=$foo_bar"
echo "use_gpu=$use_gpu"
echo "empty=$empty"
echo "nargs=$#"
for a in "$@"; do echo "arg=$a"; done
# nothing of the parser is left behind
compgen -v _po_ || true
compgen -A function _po_ || true
"""


@pytest.fixture
def run_script(tmp_path):
    script = tmp_path / "demo.sh"
    script.write_text(SCRIPT)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=30)
    return run


def _values(proc: subprocess.CompletedProcess) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        assert "=" in line, f"parse_options.sh left '{line}' defined"
        key, value = line.split("=", 1)
        out[key] = value if key != "arg" else out.get("arg", "") + f"[{value}]"
    return out


def _rejected(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr


def test_defaults_kept_without_options(run_script):
    assert _values(run_script()) == {"stage": "1", "foo_bar": "default", "use_gpu": "false",
                                     "empty": "", "nargs": "0"}


def test_dashes_become_underscores_and_equals_form(run_script):
    values = _values(run_script("--stage", "3", "--foo-bar=a b", "--empty", "x y"))
    assert values["stage"] == "3" and values["foo_bar"] == "a b" and values["empty"] == "x y"
    assert values["nargs"] == "0"
    assert _values(run_script("--foo_bar", "u"))["foo_bar"] == "u"
    assert _values(run_script("--foo-bar="))["foo_bar"] == ""


def test_positional_arguments_are_kept(run_script):
    values = _values(run_script("--stage", "2", "in dir", "--foo-bar", "x", "-h"))
    assert values["stage"] == "2" and values["foo_bar"] == "default"
    assert values["nargs"] == "4" and values["arg"] == "[in dir][--foo-bar][x][-h]"
    values = _values(run_script("--stage", "4", "--", "--stage", "5"))
    assert values["stage"] == "4" and values["arg"] == "[--stage][5]"
    assert _values(run_script("--foo-bar", "--help"))["foo_bar"] == "--help"  # a value, not help


def test_unknown_option_is_rejected(run_script):
    _rejected(run_script("--no-such-thing", "1"), "unknown option '--no-such-thing'")
    _rejected(run_script("--stage", "2", "--nope=3"), "unknown option '--nope'")
    _rejected(run_script("--bad.name", "1"), "bad option '--bad.name'")


def test_missing_value_is_rejected(run_script):
    _rejected(run_script("--stage"), "option --stage needs a value")


def test_booleans_accept_only_true_or_false(run_script):
    assert _values(run_script("--use-gpu", "true"))["use_gpu"] == "true"
    assert _values(run_script("--use-gpu=false"))["use_gpu"] == "false"
    _rejected(run_script("--use-gpu", "yes"), "'yes' is not a boolean")
    _rejected(run_script("--use-gpu", "1"), "'1' is not a boolean")


def test_help_prints_help_message_and_exits_0(run_script):
    for flag in ("--help", "-h"):
        proc = run_script("--stage", "2", flag)
        assert proc.returncode == 0
        assert proc.stdout.startswith("Usage: demo.sh [options] <in> <out>\n  --stage N")
        assert "stage=" not in proc.stdout


def test_help_without_help_message(tmp_path):
    script = tmp_path / "bare.sh"
    script.write_text(f"x=1\n. {PARSE_OPTIONS}\necho ran\n")
    proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "no help_message" in proc.stdout and "ran" not in proc.stdout


def test_config_file_is_read_first(run_script, tmp_path):
    conf = tmp_path / "my.conf"
    conf.write_text('# a comment\n\nstage=7\nfoo_bar="from config"\n  use_gpu=true\n')
    values = _values(run_script("--stage", "9", "--config", str(conf), "pos"))
    # --config is applied first wherever it appears; command-line options win over it
    assert values["stage"] == "9" and values["foo_bar"] == "from config"
    assert values["use_gpu"] == "true" and values["arg"] == "[pos]"
    assert _values(run_script(f"--config={conf}"))["stage"] == "7"


def test_bad_config_files_are_rejected(run_script, tmp_path):
    _rejected(run_script("--config", str(tmp_path / "missing.conf")), "no such file")
    _rejected(run_script("--config"), "--config needs a file name")
    conf = tmp_path / "bad.conf"
    conf.write_text("stage=2\nnot_an_option=3\n")
    _rejected(run_script("--config", str(conf)), "bad.conf:2: unknown option 'not_an_option'")
    conf.write_text("stage=2\necho hello\n")
    _rejected(run_script("--config", str(conf)), "bad.conf:2: expected 'name=value'")
