"""`sprune config`: the resolved task config, one key with --get, and its user errors."""
from __future__ import annotations

import yaml


def test_config_prints_defaults_overrides_and_one_key(tmp_path, cli):
    conf = tmp_path / "ft.yaml"
    conf.write_text("task: ctc\nupstream: up\ntrain: {max_steps: 7}\n")
    done = cli("config", conf)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["train"]["max_steps"] == 7
    assert resolved["ctc"]["units"] == "char"          # a default the YAML does not name
    assert cli("config", conf, "--get", "ctc.units").stdout == "char\n"
    done = cli("config", conf, "--set", "ctc.units=phone", "--get", "ctc.units")
    assert done.stdout == "phone\n"
    assert cli("config", conf, "--get", "freeze_feature_encoder").stdout == "true\n"


def test_config_errors_are_one_line(tmp_path, cli):
    conf = tmp_path / "ft.yaml"
    conf.write_text("task: ctc\nctc: {unitz: char}\n")
    done = cli("config", conf)
    assert done.returncode == 2 and "unitz" in done.stderr
    conf.write_text("task: ctc\n")
    done = cli("config", conf, "--get", "ctc.unit")
    assert done.returncode == 2
    assert "no key 'ctc.unit' (ctc has:" in done.stderr and "units" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
