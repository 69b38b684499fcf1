"""An LM on disk: a folder with `config.json` (format `sprune-lm`: the architecture, its
per-layer sizes, and what made it), `model.safetensors` (the weights) and `bpe.model` (the
sentencepiece units whose ids the LM predicts; `<sos/eos>` is the id after the last piece).

Written atomically: the folder appears complete or not at all. Loading refuses, in one line,
a folder that is something else (a speech upstream, an acoustic run folder) and weights that
do not fit the architecture.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sprune.config import from_dict
from sprune.errors import UserError
from sprune.io import atomic_dir, read_json_object
from sprune.lm.config import LMConfig
from sprune.lm.model import TransformerLM

FORMAT = "sprune-lm"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "bpe.model"


def save_lm(folder: str | Path, model: TransformerLM, vocab: str | Path | None = None,
            info: dict[str, Any] | None = None) -> Path:
    """Write `model` (and a copy of the BPE model `vocab`) into `folder`; `info` (JSON) is
    kept under "info" (e.g. how the LM was pruned)."""
    folder = Path(folder)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "config": dataclasses.asdict(model.config), "info": info or {}}
    tensors = {n: t.detach().contiguous().cpu() for n, t in model.state_dict().items()}
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if vocab is not None:
            shutil.copyfile(vocab, tmp / VOCAB_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return folder


def read_lm_document(folder: str | Path) -> dict[str, Any]:
    """The config.json of an LM folder; anything else is a one-line UserError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"LM {folder} does not exist; give a folder written by `sprune lm "
                        "train`, `prune`, `shrink` or `import`")
    if (folder / "experiment.json").is_file():
        raise UserError(f"{folder} is an acoustic run folder (experiment.json), not a language "
                        "model; give an LM folder written by `sprune lm ...`")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{folder} holds no {CONFIG_FILE}: not a sprune LM; give a folder "
                        "written by `sprune lm train`, `prune`, `shrink` or `import`")
    document = read_json_object(path)
    if document.get("format") != FORMAT:
        kind = ("a speech upstream" if document.get("format") == "sprune-upstream"
                or "model_type" in document else "not a sprune LM")
        raise UserError(f"{path}: {kind} (format {document.get('format')!r}), not a language "
                        "model; give an LM folder written by `sprune lm ...`")
    if document.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: format_version {document.get('format_version')!r} is not "
                        f"{FORMAT_VERSION}; it was written by another sprune version")
    if not isinstance(document.get("config"), dict):
        raise UserError(f"{path}: key 'config' (the architecture) is missing")
    return document


def load_lm(folder: str | Path, device: str | torch.device = "cpu"
            ) -> tuple[TransformerLM, dict[str, Any]]:
    """The LM saved in `folder` (eval mode) and its config.json document."""
    folder = Path(folder)
    document = read_lm_document(folder)
    config = from_dict(LMConfig, document["config"], f"{folder / CONFIG_FILE}: config")
    model = TransformerLM(config)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise UserError(f"{folder}: {WEIGHTS_FILE} is missing; write the LM again")
    weights = load_file(str(weights_path))
    expected = model.state_dict()
    for name, tensor in weights.items():
        if name not in expected:
            raise UserError(f"{weights_path}: unexpected weight '{name}' for the architecture "
                            f"in {CONFIG_FILE}; the files do not belong together")
        if tensor.shape != expected[name].shape:
            raise UserError(f"{weights_path}: weight '{name}' has shape {list(tensor.shape)} but "
                            f"{CONFIG_FILE} asks for {list(expected[name].shape)}")
    missing = [n for n in expected if n not in weights]
    if missing:
        raise UserError(f"{weights_path}: weight '{missing[0]}' is missing")
    model.load_state_dict(weights)
    return model.to(device).eval(), document


def vocab_path(folder: str | Path) -> Path | None:
    """The BPE model saved with the LM in `folder`, or None."""
    path = Path(folder) / VOCAB_FILE
    return path if path.is_file() else None
