"""The `sprune` entry point: help for every command, one-line errors with exit status 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from sprune.cli import SUBCOMMANDS

DATA_ACTIONS = ("validate", "info", "subset", "combine", "filter")


def test_top_level_help_lists_every_subcommand(sprune_cli):
    proc = sprune_cli("--help")
    assert proc.returncode == 0
    for name, (_module, help_text) in SUBCOMMANDS.items():
        assert name in proc.stdout and help_text in proc.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(name, sprune_cli):
    proc = sprune_cli(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: sprune {name}")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("action", DATA_ACTIONS)
def test_every_data_action_has_help(action, sprune_cli):
    proc = sprune_cli("data", action, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: sprune data {action}")


def test_data_help_lists_actions(sprune_cli):
    proc = sprune_cli("data", "--help")
    assert all(action in proc.stdout for action in DATA_ACTIONS)


@pytest.mark.parametrize("argv, words", [
    (["no-such-command"], "unknown command 'no-such-command'"),
    (["data"], "required: <action>"),
    (["data", "frobnicate"], "invalid choice: 'frobnicate'"),
    (["data", "validate"], "required: DIR"),
    (["data", "filter", "a", "b", "--min-seconds", "short"], "invalid float value: 'short'"),
])
def test_usage_errors_are_one_line_exit_2(argv, words, sprune_cli):
    proc = sprune_cli(*argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr


def test_no_arguments_prints_help_and_exits_2(sprune_cli):
    proc = sprune_cli()
    assert proc.returncode == 2 and "<command>" in proc.stdout


def test_version(sprune_cli):
    from sprune import __version__

    proc = sprune_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"sprune {__version__}"


def test_split_named_option_values():
    from sprune.cli import split_named
    from sprune.errors import UserError

    assert split_named("dense=exp/a=b", "--upstream") == ("dense", "exp/a=b")
    for bad in ("exp/dense", "=exp/dense", "dense="):
        with pytest.raises(UserError, match=f"--upstream '{bad}' must look like NAME=PATH"):
            split_named(bad, "--upstream")


def test_torchrun_variables_match_the_distributed_module():
    from sprune.cli import TORCHRUN_ENVIRONMENT
    from sprune.training.distributed import ENVIRONMENT

    assert TORCHRUN_ENVIRONMENT == ENVIRONMENT


def test_commands_that_need_no_torch_do_not_import_it(tmp_path, make_data_dir):
    # torch takes ~1.5 s to import; `sprune data` and the like run many times in a recipe
    from conftest import checkout_env

    data = make_data_dir(tmp_path / "d")
    code = ("import sys; from sprune.cli import main; "
            f"rc = main(['data', 'info', {str(data)!r}, '--no-audio']); "
            "print(rc, 'torch' in sys.modules)")
    env = {k: v for k, v in checkout_env().items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "0 False", done.stdout + done.stderr
