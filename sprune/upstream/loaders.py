"""Load an upstream from one spec string; save sprune's own format.

    model, config = load_upstream("exp/pruned/upstream")            # sprune format dir
    model, config = load_upstream("/models/wav2vec2-base")           # Hugging Face dir
    model, config = load_upstream("hubert_base_ls960.pt")            # s3prl-converted fairseq
    model, config = load_upstream("torchaudio:wavlm:/models/wavlm.pt")
    model, config = load_upstream("facebook/wav2vec2-base")          # hub id (needs network)

The format is detected from the path (a dir with config.json: sprune or Hugging Face; a file:
by its content); a prefix `sprune:`, `hf:`, `fairseq:` or `torchaudio[:FAMILY]:` forces one.
Files are read with safetensors or `torch.load(weights_only=True)` only. The model comes
back in eval mode, on the CPU. Bad input is one-line `UserError`: a missing path, an unknown
format, weights whose shapes do not match the config (first mismatch named with both
shapes), missing or unexpected weights.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sprune.errors import UserError
from sprune.io import read_json_object
from sprune.io import atomic_dir
from sprune.upstream.config import FAMILIES, UpstreamConfig
from sprune.upstream.fairseq_format import read_fairseq
from sprune.upstream.hf_format import read_hf_dir
from sprune.upstream.keymap import ConvertedWeights
from sprune.upstream.model import UpstreamModel
from sprune.upstream.tensors import load_tensor_file, torch_load
from sprune.upstream.torchaudio_format import is_torchaudio_state, read_torchaudio

FORMAT = "sprune-upstream"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREFIXES = ("sprune", "hf", "fairseq", "torchaudio")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def save_upstream(model: UpstreamModel, directory: str | Path) -> Path:
    """Write `model` as sprune's format: config.json (with per-layer sizes) and
    model.safetensors, atomically (the dir appears complete or not at all)."""
    directory = Path(directory)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "config": model.config.to_dict()}
    tensors = {name: tensor.detach().contiguous().cpu()
               for name, tensor in model.state_dict().items()}
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    return directory


def load_upstream(spec: str, freeze_feature_encoder: bool = False
                  ) -> tuple[UpstreamModel, UpstreamConfig]:
    """Build the model a spec names and load its weights (see the module docstring)."""
    kind, family, path = _parse_spec(spec)
    if not path.exists():
        if kind in (None, "hf") and HUB_ID.match(str(path)):
            path, kind = _download_from_hub(str(path)), "hf"
        else:
            raise UserError(f"upstream checkpoint {path} does not exist; pass an existing file or "
                            "model dir")
    config, converted = _read(kind, family, path)
    model = UpstreamModel(config, freeze_feature_encoder=freeze_feature_encoder)
    load_weights(model, converted, str(path))
    return model.eval(), config


def load_weights(model: UpstreamModel, converted: ConvertedWeights, source: str) -> None:
    """Copy converted weights into `model`; shape mismatches, missing and unexpected
    weights are `UserError`s naming the checkpoint's own key."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        found = converted.weights.get(name)
        if found is not None and tuple(found.shape) != tuple(tensor.shape):
            raise UserError(
                f"{source}: weight '{converted.origin[name]}' has shape {tuple(found.shape)} but "
                f"the config expects {tuple(tensor.shape)}; the config does not match the "
                "weights (fix the config or pass the checkpoint it belongs to)")
    missing = [name for name in expected if name not in converted.weights]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{source}: the checkpoint lacks weight '{missing[0]}'{more} that the "
                        "config needs; is it the complete checkpoint of this model?")
    unexpected = converted.unexpected + [
        converted.origin[name] for name in converted.weights if name not in expected]
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise UserError(f"{source}: unexpected weight '{unexpected[0]}'{more} that the config "
                        "has no place for; the config does not match the checkpoint")
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(converted.weights[name])


def _parse_spec(spec: str) -> tuple[str | None, str | None, Path]:
    """`[kind:[family:]]path` -> (kind or None, family or None, path)."""
    head, sep, rest = str(spec).partition(":")
    if not sep or head not in PREFIXES:
        return None, None, Path(spec)
    family = None
    if head == "torchaudio":
        maybe_family, sep2, path = rest.partition(":")
        if sep2 and maybe_family in FAMILIES:
            family, rest = maybe_family, path
        elif sep2 and not Path(rest).exists():
            raise UserError(f"upstream spec '{spec}': unknown family '{maybe_family}'; use "
                            f"torchaudio:{{{','.join(FAMILIES)}}}:PATH")
    return head, family, Path(rest)


def _read(kind: str | None, family: str | None, path: Path
          ) -> tuple[UpstreamConfig, ConvertedWeights]:
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise UserError(f"{path}: a model dir needs {CONFIG_FILE} (sprune or Hugging Face "
                            "format); for a single checkpoint file pass the file itself")
        document = read_json_object(path / CONFIG_FILE)
        if document.get("format") == "sprune-lm":
            raise UserError(f"{path} is a sprune language model, not a speech upstream; give "
                            "an upstream dir (sprune, Hugging Face) or checkpoint file")
        is_sprune = document.get("format") == FORMAT
        if kind == "sprune" or (kind is None and is_sprune):
            return _read_sprune_dir(path, document)
        if kind in (None, "hf") and "model_type" in document:
            return read_hf_dir(path)
        raise UserError(f"{path / CONFIG_FILE} is neither sprune's format (\"format\": "
                        f"\"{FORMAT}\") nor a Hugging Face config (\"model_type\")")
    if path.suffix == ".safetensors":
        state: Any = load_tensor_file(path)
    else:
        state = torch_load(path)
    if not isinstance(state, dict):
        raise UserError(f"{path}: unknown checkpoint format (not a mapping)")
    if kind in (None, "fairseq") and ("model_weight" in state or (
            "model" in state and "cfg" in state)):
        return read_fairseq(state, str(path))
    if kind in (None, "torchaudio") and is_torchaudio_state(state):
        return read_torchaudio(state, path, family)
    if any(str(key).startswith(("feature_projection.", "wav2vec2.", "hubert.", "wavlm."))
           for key in state):
        raise UserError(f"{path} holds Hugging Face weights without their config; pass the "
                        f"model dir (with config.json) instead: {path.parent}")
    raise UserError(f"{path}: unknown checkpoint format; sprune loads Hugging Face model dirs, "
                    "s3prl-converted fairseq checkpoints, torchaudio state dicts and its own "
                    "format (a dir with config.json + model.safetensors)")




def _read_sprune_dir(path: Path, document: dict[str, Any]
                     ) -> tuple[UpstreamConfig, ConvertedWeights]:
    where = str(path / CONFIG_FILE)
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{where}: format_version {version!r} is not {FORMAT_VERSION}; it was "
                        "written by another sprune version")
    if not isinstance(document.get("config"), dict):
        raise UserError(f"{where}: key 'config' (the architecture) is missing")
    config = UpstreamConfig.from_dict(document["config"], f"{where}: config")
    if not (path / WEIGHTS_FILE).is_file():
        raise UserError(f"{path}: {WEIGHTS_FILE} is missing")
    weights = load_tensor_file(path / WEIGHTS_FILE)
    return config, ConvertedWeights(weights=weights, origin={k: k for k in weights})


def _download_from_hub(repo_id: str) -> Path:
    """Fetch a Hugging Face model repo's config and weights into the local cache."""
    try:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(
            repo_id, allow_patterns=["config.json", "preprocessor_config.json",
                                     "*.safetensors", "*.safetensors.index.json"]))
        if not any(directory.glob("*.safetensors")):
            directory = Path(snapshot_download(
                repo_id, allow_patterns=["config.json", "preprocessor_config.json",
                                         "pytorch_model*.bin", "pytorch_model.bin.index.json"]))
    except Exception as err:  # offline, unknown repo, gated repo: all mean "use a local path"
        raise UserError(f"'{repo_id}' is not a local path and downloading it from the Hugging "
                        f"Face hub failed ({type(err).__name__}: offline, unknown or gated "
                        "repo); pass a local path to a downloaded model dir") from None
    return directory
