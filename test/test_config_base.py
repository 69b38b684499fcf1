"""`base:` in YAML configs (sprune.config.load_yaml): merge, chains, paths relative to the
file, one-line errors; and every YAML under egs/ and conf/ resolves and builds its config."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import yaml

from sprune.config import load_config, load_yaml, merge_mappings
from sprune.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_merges_nested_mappings_and_replaces_lists_and_scalars(tmp_path):
    write(tmp_path / "shared" / "a.yaml",
          "method: parp\nsparsity: 0.5\ninclude: [x, y]\n"
          "train: {lr: 1.0e-4, epochs: 3, nested: {a: 1, b: 2}}\nhead: {dim: 8}\n")
    child = write(tmp_path / "recipe" / "conf" / "b.yaml",
                  "base: ../../shared/a.yaml\nsparsity: 0.7\ninclude: [z]\n"
                  "train: {epochs: 5, nested: {b: 3}}\nhead: null\n")
    assert load_yaml(child) == {
        "method": "parp", "sparsity": 0.7, "include": ["z"],
        "train": {"lr": 1.0e-4, "epochs": 5, "nested": {"a": 1, "b": 3}}, "head": None}
    assert load_yaml(tmp_path / "shared" / "a.yaml")["train"]["epochs"] == 3   # base untouched


def test_merge_mappings_does_not_change_its_inputs():
    base, over = {"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}
    assert merge_mappings(base, over) == {"a": {"b": 1, "c": 3}}
    assert base == {"a": {"b": 1, "c": 2}} and over == {"a": {"c": 3}}


def test_chained_bases_and_an_absolute_base(tmp_path):
    write(tmp_path / "c.yaml", "x: 1\ny: 1\nz: 1\nm: {p: 1, q: 1}\n")
    write(tmp_path / "sub" / "b.yaml", "base: ../c.yaml\ny: 2\nm: {q: 2}\n")
    a = write(tmp_path / "sub" / "deeper" / "a.yaml", "base: ../b.yaml\nz: 3\n")
    assert load_yaml(a) == {"x": 1, "y": 2, "z": 3, "m": {"p": 1, "q": 2}}
    absolute = write(tmp_path / "elsewhere" / "d.yaml", f"base: {tmp_path / 'c.yaml'}\nx: 4\n")
    assert load_yaml(absolute)["x"] == 4 and load_yaml(absolute)["y"] == 1


def test_base_is_relative_to_the_file_not_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path / "conf" / "prune" / "omp.yaml", "method: omp\nsparsity: 0.5\n")
    write(tmp_path / "egs" / "x" / "asr1" / "conf" / "prune_omp.yaml",
          "base: ../../../../conf/prune/omp.yaml\nsparsity: 0.8\n")
    for cwd, path in ((tmp_path / "egs" / "x" / "asr1", "conf/prune_omp.yaml"),
                      (tmp_path, "egs/x/asr1/conf/prune_omp.yaml"),
                      (tmp_path / "conf", "../egs/x/asr1/conf/prune_omp.yaml")):
        monkeypatch.chdir(cwd)
        assert load_yaml(path) == {"method": "omp", "sparsity": 0.8}


def test_a_symlinked_file_resolves_its_base_from_where_it_points(tmp_path):
    write(tmp_path / "shared" / "base.yaml", "a: 1\n")
    write(tmp_path / "shared" / "child.yaml", "base: base.yaml\nb: 2\n")
    link = tmp_path / "recipe" / "conf" / "child.yaml"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "shared" / "child.yaml")
    assert load_yaml(link) == {"a": 1, "b": 2}


def one_line_error(path) -> str:
    with pytest.raises(UserError) as info:
        load_yaml(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_base_names_the_file_and_the_fix(tmp_path, monkeypatch):
    write(tmp_path / "conf" / "prune_omp.yaml", "base: ../../../conf/prune/omp.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert one_line_error("conf/prune_omp.yaml") == (
        "conf/prune_omp.yaml: base ../../../conf/prune/omp.yaml does not exist; fix the path "
        "(relative to this file)")


def test_a_broken_base_of_a_base_names_the_file_that_has_it(tmp_path, monkeypatch):
    write(tmp_path / "shared" / "mid.yaml", "base: gone.yaml\n")
    write(tmp_path / "conf" / "a.yaml", "base: ../shared/mid.yaml\n")
    monkeypatch.chdir(tmp_path)
    message = one_line_error("conf/a.yaml")
    assert message.startswith(os.path.join("shared", "mid.yaml") + ": base gone.yaml does not")


@pytest.mark.parametrize("value", ["[a.yaml]", "3", "{file: a.yaml}", "null", "''"])
def test_a_base_that_is_not_a_file_name(tmp_path, value):
    conf = write(tmp_path / "a.yaml", f"base: {value}\nx: 1\n")
    message = one_line_error(conf)
    assert message.startswith(f"{conf}: base: ") and "not a file name" in message


def test_cycles_are_user_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "self.yaml", "base: self.yaml\n")
    assert "makes a cycle (self.yaml -> self.yaml)" in one_line_error("self.yaml")
    write(tmp_path / "a.yaml", "base: b/b.yaml\n")
    write(tmp_path / "b" / "b.yaml", "base: ../c.yaml\n")
    write(tmp_path / "c.yaml", "base: a.yaml\n")
    message = one_line_error("a.yaml")
    b = os.path.join("b", "b.yaml")
    assert message.startswith("c.yaml: base a.yaml makes a cycle")
    assert f"(a.yaml -> {b} -> c.yaml -> a.yaml)" in message


def test_load_config_applies_overrides_over_the_merged_file(tmp_path):
    from sprune.prune.methods import PruneConfig

    write(tmp_path / "parp.yaml", "method: parp\nreprune_every: 50\nsparsity: 0.5\n")
    conf = write(tmp_path / "r" / "prune_parp.yaml", "base: ../parp.yaml\nreprune_every: 10\n")
    config = load_config(PruneConfig, conf, overrides=["sparsity=0.9"])
    assert (config.method, config.reprune_every, config.sparsity) == ("parp", 10, 0.9)
    write(tmp_path / "r" / "bad.yaml", "base: ../parp.yaml\nreprune_evry: 10\n")
    with pytest.raises(UserError, match="bad.yaml: unknown key 'reprune_evry'"):
        load_config(PruneConfig, tmp_path / "r" / "bad.yaml")


def test_sprune_config_prints_a_recipe_file_merged(cli, monkeypatch):
    monkeypatch.chdir(REPO / "egs" / "mini_minds" / "asr1")
    done = cli("config", "conf/prune_parp.yaml")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["method"] == "parp" and resolved["reprune_every"] == 20   # base + recipe
    assert resolved["scope"] == "transformer" and resolved["criterion"] == "magnitude"
    assert cli("config", "conf/prune_imp.yaml", "--get", "imp_fraction").stdout == "0.3\n"
    assert cli("config", "conf/prune_imp.yaml", "--get", "imp_ticket").stdout == "target\n"
    done = cli("config", "conf/prune_imp.yaml", "--set", "imp_fraction=0.5", "--get",
               "imp_fraction")
    assert done.stdout == "0.5\n"
    monkeypatch.chdir(REPO / "egs" / "superb" / "prune1")
    resolved = yaml.safe_load(cli("config", "conf/prune_l0.yaml").stdout)
    assert resolved["structured"]["target_sparsity"] == 0.8               # the recipe's
    assert resolved["structured"]["structures"]["qk_dims"] is True        # conf/l0/defaults
    assert resolved["train"]["warmup_ratio"] == 0.07 and resolved["train"]["max_steps"] == 200000


def test_sprune_config_merges_a_task_config_base(tmp_path, cli):
    write(tmp_path / "shared" / "ctc.yaml", "task: ctc\nctc: {units: phone}\ntrain: {lr: 1.0e-4}\n")
    conf = write(tmp_path / "recipe" / "conf" / "finetune.yaml",
                 "base: ../../shared/ctc.yaml\nupstream: up\ntrain: {max_steps: 7}\n")
    resolved = yaml.safe_load(cli("config", conf).stdout)
    assert resolved["ctc"]["units"] == "phone" and resolved["train"]["max_steps"] == 7
    assert resolved["train"]["lr"] == 1.0e-4
    write(tmp_path / "recipe" / "conf" / "broken.yaml", "base: ../nope.yaml\n")
    done = cli("config", tmp_path / "recipe" / "conf" / "broken.yaml")
    assert done.returncode == 2 and "base ../nope.yaml does not exist" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# Every YAML under egs/ and conf/: the config class that the command reading it builds.
def _prune(path: Path) -> object:
    from sprune.prune.methods import PruneConfig

    return load_config(PruneConfig, path)


def _l0(path: Path) -> object:
    from sprune.structured.run import load_l0prune_config

    return load_l0prune_config(path, upstream=None if "egs" in path.parts else "shared-default")


def _task(path: Path) -> object:
    from sprune.experiment import load_experiment_config

    return load_experiment_config(str(path))


def _pretrain(path: Path) -> object:
    from sprune.ssl.hubert_pretrain import load_pretrain_config

    return load_pretrain_config(str(path))


def _references(path: Path) -> object:
    from sprune.superb.score import load_references

    return load_references(path)


def _s3prl(path: Path) -> object:
    # read by s3prl's own loader (`--config`), which knows no `base:`
    assert "base" not in yaml.safe_load(path.read_text()), f"{path}: s3prl cannot read base:"
    return load_yaml(path)


def builder(path: Path) -> Callable[[Path], object] | None:
    """The loader of `path`'s kind; None for kinds without a typed loader here yet (they are
    still resolved with load_yaml)."""
    rel = path.relative_to(REPO)
    name = path.name
    if rel.parts[:2] == ("conf", "prune") or (name.startswith("prune_") and name != "prune_l0.yaml"):
        return _prune
    if rel.parts[:2] == ("conf", "l0") or name == "prune_l0.yaml":
        return _l0
    if name.startswith(("finetune", "transducer")):
        return _task
    if name.startswith("pretrain"):
        return _pretrain
    if name == "superb_reference.yaml":
        return _references
    if "superb" in rel.parts[:-1]:
        return _s3prl
    return None


YAMLS = sorted(p for top in ("egs", "conf") for p in (REPO / top).rglob("*.y*ml")
               if p.suffix in (".yaml", ".yml") and not {"data", "exp", "dump"} & set(p.parts))


def test_the_repository_has_the_shared_configs():
    names = {str(p.relative_to(REPO)) for p in YAMLS}
    for m in ("rp", "mpi", "omp", "imp", "imp-rewind", "parp", "parp-p"):
        assert f"conf/prune/{m}.yaml" in names
    assert "conf/l0/defaults.yaml" in names
    typed = [p for p in YAMLS if builder(p) is not None and p.parts[len(REPO.parts)] == "egs"]
    assert len(typed) >= 40


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_resolves_and_builds_its_config(path):
    data = load_yaml(path)
    assert isinstance(data, dict) and "base" not in data
    build = builder(path)
    if build is not None:
        assert build(path) is not None


def test_recipe_conf_dirs_have_no_symlinks():
    links = [str(p.relative_to(REPO)) for p in (REPO / "egs").glob("*/*/conf/**/*")
             if p.is_symlink()]
    assert not links, f"recipe configs must be real files with base: (conf/README.md): {links}"


@pytest.mark.parametrize("recipe, method, expected", [
    ("librispeech/asr1", "imp", {"imp_fraction": 0.1, "imp_level_epochs": 5,
                                 "imp_ticket": "target"}),
    ("commonvoice/asr1", "parp", {"reprune_every": 50}),
    ("mini_minds/asr1", "imp", {"imp_fraction": 0.3, "imp_level_epochs": 0.3,
                                "imp_rewind_epochs": 0, "imp_ticket": "target"}),
    ("mini_minds/asr1", "parp-p", {"reprune_every": 20, "progressive_until": 0.5}),
    ("mini_minds/ic1", "imp", {"imp_fraction": 0.7, "imp_rewind_epochs": 0.1,
                               "imp_level_epochs": 0.5, "imp_ticket": "target"}),
    ("mini_minds/ic1", "parp", {"reprune_every": 20, "sparsity": 0.5}),
    ("minds14/ic1", "imp", {"sparsity": 0.8, "imp_fraction": 0.2, "imp_rewind_epochs": 2,
                            "imp_level_epochs": 5, "imp_ticket": "best"}),
    ("minds14/ic1", "rp", {"sparsity": 0.8, "seed": 0, "granularity": "element"}),
])
def test_recipe_method_files_resolve_to_their_settings(recipe, method, expected):
    data = load_yaml(REPO / "egs" / recipe / "conf" / f"prune_{method}.yaml")
    assert data["method"] == method and data["scope"] == "transformer"
    assert {k: data[k] for k in expected} == expected
