"""Save and load trained structured masks with the upstream they belong to.

A masks dir (written atomically):

    masks.json           format, structures, hard-concrete beta, training steps, and a
                         report (dense / shrunk parameter counts, sparsity of the scope)
    masks.safetensors    log_alpha of every gate, by gate name (`layers.3.qk`, `conv.0`, ...)
    upstream/            the full-size student upstream (sprune format): distillation
                         trains its weights too, so shrinking needs these, not the original

A training run keeps its masks dir at `<run>/masks` (see `sprune.structured.task`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sprune.errors import UserError
from sprune.io import atomic_dir, read_json_object
from sprune.structured.masked import MaskedUpstream
from sprune.structured.sparsity import ParameterBudget, parameter_count
from sprune.structured.structures import Structures
from sprune.upstream.loaders import load_upstream, save_upstream

FORMAT = "sprune-l0-masks"
FORMAT_VERSION = 1
MASKS_JSON = "masks.json"
MASKS_FILE = "masks.safetensors"
UPSTREAM_DIR = "upstream"
RUN_MASKS_DIR = "masks"


def mask_report(masked: MaskedUpstream) -> dict[str, Any]:
    """Parameter counts and scope sparsity of the model the deterministic gates shrink to."""
    budget = ParameterBudget(masked.config, masked.structures)
    masks = masked.eval_masks()
    return {"dense_parameters": int(round(budget.dense_total)),
            "shrunk_parameters": int(round(float(parameter_count(masked.config, masks).total))),
            "scope_sparsity": round(budget.sparsity_of(masks), 6),
            "expected_scope_sparsity": round(float(budget.expected_sparsity(
                masked.gates.probabilities()).detach()), 6)}


def save_masks(masked: MaskedUpstream, directory: str | Path, steps: int) -> Path:
    """Write `masked` (gates + full-size upstream) as a masks dir; `steps` = updates trained."""
    directory = Path(directory)
    first_gate = next(iter(masked.gates.gates.values()))
    document = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "structures": dataclasses.asdict(masked.structures),
                "beta": first_gate.beta, "straight_through": first_gate.straight_through,
                "steps": int(steps), "report": mask_report(masked)}
    tensors = {name: alpha.detach().cpu().contiguous()
               for name, alpha in masked.gates.log_alphas().items()}
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / MASKS_FILE))
        save_upstream(masked.upstream, tmp / UPSTREAM_DIR)
        (tmp / MASKS_JSON).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return directory


def resolve_masks_dir(masks: str | Path | None = None, run: str | Path | None = None) -> Path:
    """The masks dir named by `--masks DIR` or found in `--run DIR`; UserError if absent."""
    if run is not None:
        run = Path(run)
        if not run.is_dir():
            raise UserError(f"run folder {run} does not exist")
        directory = run / RUN_MASKS_DIR
        if not (directory / MASKS_FILE).is_file():
            raise UserError(f"{run} has no trained masks ({RUN_MASKS_DIR}/{MASKS_FILE} is "
                            "missing); finish its structured-pruning training first")
        return directory
    if masks is None:
        raise UserError("give the trained masks: --masks DIR or --run DIR")
    directory = Path(masks)
    if not directory.is_dir():
        raise UserError(f"masks dir {directory} does not exist")
    if not (directory / MASKS_FILE).is_file():
        raise UserError(f"{directory} has no trained masks ({MASKS_FILE} is missing); pass the "
                        "masks dir a structured-pruning run wrote (<run>/masks)")
    return directory


def load_masks(directory: str | Path, require_trained: bool = True
               ) -> tuple[MaskedUpstream, dict[str, Any]]:
    """The `MaskedUpstream` of a masks dir (eval mode) and its masks.json document."""
    directory = Path(directory)
    where = directory / MASKS_JSON
    if not where.is_file() or not (directory / MASKS_FILE).is_file():
        raise UserError(f"{directory} has no trained masks ({MASKS_JSON} and {MASKS_FILE} "
                        "needed); pass the masks dir a structured-pruning run wrote")
    document = read_json_object(where)
    if document.get("format") != FORMAT:
        raise UserError(f"{where}: not a masks file (\"format\" is not \"{FORMAT}\")")
    if document.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{where}: format_version {document.get('format_version')!r} is not "
                        f"{FORMAT_VERSION}; it was written by another sprune version")
    steps = document.get("steps")
    if not isinstance(steps, int) or (require_trained and steps < 1):
        raise UserError(f"{where}: the masks were never trained (steps: {steps!r}); train "
                        "them with structured pruning before shrinking")
    structures = Structures.parse(document.get("structures", {}), f"{where}: structures")
    upstream, _ = load_upstream(f"sprune:{directory / UPSTREAM_DIR}")
    beta = document.get("beta")
    if not isinstance(beta, (int, float)) or beta <= 0:
        raise UserError(f"{where}: 'beta' must be a positive number")
    masked = MaskedUpstream(upstream, structures, beta=float(beta),
                            straight_through=bool(document.get("straight_through", True)))
    stored = load_file(str(directory / MASKS_FILE))
    expected = masked.gates.log_alphas()
    for name, alpha in expected.items():
        if name not in stored:
            raise UserError(f"{directory / MASKS_FILE}: gate '{name}' is missing; the masks do "
                            "not belong to this upstream and structure set")
        if tuple(stored[name].shape) != tuple(alpha.shape):
            raise UserError(f"{directory / MASKS_FILE}: gate '{name}' has shape "
                            f"{tuple(stored[name].shape)}, the upstream needs "
                            f"{tuple(alpha.shape)}")
    extra = sorted(set(stored) - set(expected))
    if extra:
        raise UserError(f"{directory / MASKS_FILE}: unexpected gate '{extra[0]}' for the "
                        "structures in masks.json")
    with torch.no_grad():
        for name, alpha in expected.items():
            alpha.copy_(stored[name])
    return masked.eval(), document
