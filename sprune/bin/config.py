"""Print a recipe config as the run that reads it resolves it: `base:` files merged in,
defaults filled in, `--set` overrides applied, checked like a run would check it.

  sprune config conf/finetune.yaml                        # the whole resolved config (YAML)
  sprune config conf/finetune.yaml --get ctc.units        # one value, e.g. `char`
  sprune config conf/finetune.yaml --set ctc.units=phone --get ctc.units
  sprune config conf/prune_imp.yaml --get imp_fraction    # a pruning method (PruneConfig)
  sprune config conf/prune_l0.yaml --get structured.target_sparsity   # structured L0 pruning

The kind of file is read from its keys: `method:` is a pruning-method config (`sprune prune
--method`), `structured:` a structured-pruning config (`sprune l0prune`), anything else a
task config (`sprune prune --config`). Recipes ask it instead of grepping the YAML, so bases,
defaults and overrides count (asr.sh decides with `--get ctc.units` whether it needs phone
transcripts).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml

from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="recipe config YAML: a task config (conf/finetune.yaml), "
                        "a pruning method (conf/prune_<method>.yaml) or a structured-pruning "
                        "config (conf/prune_l0.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a key, as `sprune prune --set` does")
    parser.add_argument("--get", metavar="KEY",
                        help="print only this dotted key's value (e.g. ctc.units, train.lr)")


def lookup(config: dict[str, Any], key: str, where: str) -> Any:
    """The value at dotted `key` of a nested mapping; a `UserError` names a missing key."""
    node: Any = config
    for depth, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (not a mapping)"
            prefix = ".".join(key.split(".")[:depth]) or "the top level"
            raise UserError(f"{where}: no key '{key}' ({prefix} has: {known})")
        node = node[part]
    return node


def resolve(path: str, overrides: list[str]) -> dict[str, Any]:
    """The resolved config of `path` as a plain mapping, by the kind its keys name."""
    from sprune.config import apply_overrides, load_config, load_yaml

    keys = apply_overrides(load_yaml(path), overrides, path)
    if "method" in keys:
        from sprune.prune.methods import PruneConfig

        return dataclasses.asdict(load_config(PruneConfig, path, overrides))
    if "structured" in keys:
        from sprune.structured.run import load_l0prune_config

        return load_l0prune_config(path, overrides).to_dict()
    from sprune.experiment import load_experiment_config

    return dataclasses.asdict(load_experiment_config(path, overrides))


def run(args: argparse.Namespace) -> int:
    config = resolve(args.config, args.overrides)
    if args.get is None:
        print(yaml.safe_dump(config, sort_keys=False).rstrip())
        return 0
    value = lookup(config, args.get, args.config)
    if isinstance(value, (dict, list)):
        print(yaml.safe_dump(value, sort_keys=False).rstrip())
    elif value is None:
        print("null")
    elif isinstance(value, bool):
        print("true" if value else "false")
    else:
        print(value)
    return 0
