"""Reading checkpoint files safely: safetensors, or `torch.load(weights_only=True)` only.

Pickled checkpoints that need arbitrary classes (raw fairseq checkpoints carry an
`argparse.Namespace` or an omegaconf config) are refused with the way to convert them.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from sprune.errors import UserError

CONVERT_HINT = (
    "convert it once where fairseq is installed, with s3prl's converter "
    "(python -m s3prl.upstream.wav2vec2.convert CKPT --output_dir DIR, or "
    "s3prl.upstream.hubert.convert for HuBERT) and pass the converted .pt")


def torch_load(path: Path) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; unsafe pickles are a `UserError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise UserError(f"{path} is not a readable PyTorch checkpoint (corrupt or not a "
                            "checkpoint)") from None
        raise UserError(f"{path} needs unsafe unpickling (it holds an object of class "
                        f"{found.group(1)}), which sprune refuses; if it is a raw fairseq "
                        f"checkpoint, {CONVERT_HINT}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({reason})") from None


def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor file: `.safetensors`, or a pickled state dict."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path} is not a readable safetensors file ({err})") from None
    state = torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a flat mapping of names to tensors")
    return state
