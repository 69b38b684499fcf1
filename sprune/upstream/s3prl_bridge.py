"""sprune upstreams as s3prl upstream names: SUPERB through s3prl, espnet's S3prlFrontend.

    from sprune.upstream.s3prl_bridge import register
    register("sprune")                                   # once per process, before s3prl use
    from s3prl.nn import S3PRLUpstream, Featurizer
    upstream = S3PRLUpstream("sprune", path_or_url="exp/pruned/upstream")
    all_hs, all_lens = upstream(wavs, wavs_len)          # wavs [B, T] 16 kHz, wavs_len [B]

The name is an attribute set at run time on `s3prl.hub`, which is where `S3PRLUpstream`,
`S3PRLUpstream.available_names()`, espnet's `S3prlFrontend` (frontend_conf `upstream: sprune`,
`path_or_url: DIR`) and s3prl's old `run_downstream.py` runner (`-u sprune -k DIR`) look names
up. A checkpoint is any spec `load_upstream` reads (a sprune model dir, usually); relative
paths resolve against the current directory when the upstream is built, so nothing absolute is
baked in. Another process (a training job) must register the name itself: run it through

    python -m sprune.upstream.s3prl_bridge [--name sprune] MODULE ARGS...

e.g. `... s3prl.run_downstream -m train -u sprune -k DIR -d asr -c conf.yaml` or
`... espnet2.bin.asr_train --config conf.yaml ...`, which registers, then runs MODULE as
`__main__` with ARGS.

s3prl 0.4.18 does not import beside torchaudio 2.9, which dropped the audio-backend functions
and `torchaudio.sox_effects`; `install_torchaudio_shim()` (called by `import_s3prl()`) puts
back what s3prl's imports touch.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import runpy
import sys
import types
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from sprune.errors import EXIT_USER_ERROR, UserError
from sprune.upstream.loaders import load_upstream
from sprune.upstream.model import UpstreamModel

DEFAULT_NAME = "sprune"
ENTRY_MARK = "_sprune_upstream_entry"  # set on the hub functions that register() made
EXPERT_OPTIONS = ("freeze_feature_encoder",)


# --- torchaudio compatibility ---------------------------------------------------------------
def install_torchaudio_shim() -> None:
    """Give torchaudio >= 2.9 what s3prl 0.4.18 touches when imported; idempotent.

    Adds no-op `torchaudio.set_audio_backend` / `get_audio_backend` (torchaudio picks its
    decoder itself since 2.1) and a `torchaudio.sox_effects` module whose
    `apply_effects_tensor` / `apply_effects_file` exist (s3prl imports them at module level)
    but raise if called: the sox effects are gone from torchaudio. Anything torchaudio still
    has is left alone.
    """
    import torchaudio

    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = _set_audio_backend
    if not hasattr(torchaudio, "get_audio_backend"):
        torchaudio.get_audio_backend = _get_audio_backend
    try:
        importlib.import_module("torchaudio.sox_effects")
    except ImportError:
        module = types.ModuleType(
            "torchaudio.sox_effects", "Placeholder installed by sprune: torchaudio >= 2.9 "
            "has no sox effects; the functions raise when called.")
        module.apply_effects_tensor = _sox_effects_removed("apply_effects_tensor")
        module.apply_effects_file = _sox_effects_removed("apply_effects_file")
        sys.modules["torchaudio.sox_effects"] = module
        torchaudio.sox_effects = module


def _set_audio_backend(backend: str | None) -> None:
    """No-op: torchaudio >= 2.9 has no selectable audio backend."""


def _get_audio_backend() -> None:
    """None: torchaudio >= 2.9 has no selectable audio backend."""
    return None


def _sox_effects_removed(function: str) -> Callable[..., Any]:
    def removed(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"torchaudio.sox_effects.{function} was removed in torchaudio 2.9 (this module is "
            "sprune's import shim for s3prl); convert the audio to 16 kHz mono beforehand")
    removed.__name__ = function
    return removed


def install_pandas_shim() -> None:
    """s3prl 0.4.18's corpus readers (`s3prl.dataio.corpus.base`, e.g. SUPERB IC's Fluent
    Speech Commands) call `pandas.Series.iteritems`, which pandas 2 renamed `items`: give it
    back when pandas is installed and lacks it; idempotent, and nothing without pandas."""
    try:
        import pandas
    except ImportError:
        return
    if not hasattr(pandas.Series, "iteritems"):
        pandas.Series.iteritems = pandas.Series.items


def import_s3prl() -> types.ModuleType:
    """Install the torchaudio and pandas shims, import s3prl and return `s3prl.hub` (slow
    the first time: s3prl's hub imports every upstream, espnet's among them; nltk downloads
    that espnet's import would try are skipped: `sprune.offline`)."""
    from sprune.offline import import_offline

    install_torchaudio_shim()
    install_pandas_shim()
    return import_offline("s3prl.hub")


# --- the expert -----------------------------------------------------------------------------
class SpruneExpert(nn.Module):
    """s3prl's upstream contract around an `UpstreamModel`.

    forward(list of B 1-D float tensors, 16 kHz, any lengths) -> {"hidden_states": L + 1
    tensors [B, T', D], "last_hidden_state": [B, T', D]}, T' the frames of the longest wav.
    The wavs are zero-padded and their lengths passed to the model, so padding is masked as
    in s3prl's own wav2vec2 / HuBERT / WavLM experts; frames past a wav's valid length are
    padding. Gradients flow (no inference mode) unless the conv feature encoder is frozen,
    which stops them there. Layerdrop is off so that every call returns L + 1 states (s3prl's
    experts do the same).
    """

    def __init__(self, model: UpstreamModel, freeze_feature_encoder: bool = False) -> None:
        super().__init__()
        self.model = model
        self.model.encoder.layerdrop = 0.0
        if freeze_feature_encoder:
            self.model.freeze_feature_encoder(True)

    def get_downsample_rates(self, key: str) -> int:
        """Samples per output frame for every feature key: 320 for the standard extractor."""
        return self.model.config.downsample_rate

    def forward(self, wavs: list[Tensor]) -> dict[str, Tensor | list[Tensor]]:
        if len(wavs) == 0:
            raise ValueError("the s3prl upstream got an empty list of wavs")
        for i, wav in enumerate(wavs):
            if wav.dim() != 1:
                raise ValueError(f"wav {i} has shape {tuple(wav.shape)}; s3prl upstreams take "
                                 "1-D 16 kHz waveforms")
        device = wavs[0].device
        lengths = torch.tensor([wav.shape[0] for wav in wavs], dtype=torch.long, device=device)
        hidden_states = list(self.model(pad_sequence(wavs, batch_first=True), lengths)
                             .hidden_states)
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}


def build_expert(name: str, ckpt: str | os.PathLike | None, model_config: str | None = None,
                 **options: Any) -> SpruneExpert:
    """Load the checkpoint `ckpt` (any `load_upstream` spec) into a `SpruneExpert`.

    `name` is the registered name (for messages); `options` are the expert's keyword options
    (s3prl's `extra_conf`): `freeze_feature_encoder`. Bad input is a one-line `UserError`.
    """
    if ckpt is None:
        raise UserError(
            f"s3prl upstream '{name}' needs a checkpoint: S3PRLUpstream('{name}', "
            "path_or_url=DIR), espnet frontend_conf path_or_url: DIR, or run_downstream.py "
            "-k DIR (a sprune upstream dir)")
    if model_config is not None:
        raise UserError(
            f"s3prl upstream '{name}': model_config '{model_config}' is not used, the "
            "architecture is read from the checkpoint; drop it (run_downstream.py -g)")
    unknown = sorted(set(options) - set(EXPERT_OPTIONS))
    if unknown:
        raise UserError(f"s3prl upstream '{name}': unknown option '{unknown[0]}' (extra_conf); "
                        f"known: {', '.join(EXPERT_OPTIONS)}")
    model, _ = load_upstream(os.fspath(ckpt))
    return SpruneExpert(model, freeze_feature_encoder=bool(
        options.get("freeze_feature_encoder", False)))


# --- registration ---------------------------------------------------------------------------
def register(name: str = DEFAULT_NAME, ckpt: str | os.PathLike | None = None) -> str:
    """Make `name` an s3prl upstream (an entry of `s3prl.hub`) that loads sprune checkpoints.

    `ckpt`, kept as given (relative paths resolve when the upstream is built), is the default
    for calls that pass none. Registering a name again replaces it; a name s3prl already
    uses for its own upstreams is a `UserError`. Returns `name`.
    """
    hub = import_s3prl()
    if not name.isidentifier() or name.startswith("_"):
        raise UserError(f"s3prl upstream name '{name}' is not usable: give a Python identifier "
                        "that does not start with '_' (s3prl lists only those)")
    existing = getattr(hub, name, None)
    if existing is not None and not getattr(existing, ENTRY_MARK, False):
        raise UserError(f"s3prl already has an upstream named '{name}'; register sprune's "
                        "checkpoint under another name")
    default_ckpt = None if ckpt is None else os.fspath(ckpt)

    def entry(ckpt: str | None = None, model_config: str | None = None, refresh: bool = False,
              **options: Any) -> SpruneExpert:
        # `refresh` is s3prl's re-download switch; sprune checkpoints are local files.
        return build_expert(name, ckpt if ckpt is not None else default_ckpt, model_config,
                            **options)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"sprune upstream (registered by sprune.upstream.s3prl_bridge): "
                     f"ckpt = a sprune upstream dir; default {default_ckpt!r}")
    setattr(entry, ENTRY_MARK, True)
    setattr(hub, name, entry)
    return name


# --- running another program with the name registered ---------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`python -m sprune.upstream.s3prl_bridge [--name N] [--ckpt DIR] MODULE ARGS...`:
    register N, then run MODULE as `__main__` with ARGS (its exit status is returned)."""
    parser = argparse.ArgumentParser(
        prog="python -m sprune.upstream.s3prl_bridge",
        description="Register a sprune upstream name in s3prl, then run a Python module "
                    "(s3prl.run_downstream, espnet2.bin.asr_train, ...) as __main__ with ARGS.")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help="the s3prl upstream name to register (default: %(default)s)")
    parser.add_argument("--ckpt", default=None,
                        help="default checkpoint for calls that pass none (a sprune upstream dir)")
    parser.add_argument("module", help="module to run, e.g. s3prl.run_downstream")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args(argv)
    saved_argv = sys.argv
    try:
        register(options.name, options.ckpt)
        if not _module_exists(options.module):
            raise UserError(f"no Python module '{options.module}' to run; give an importable "
                            "module such as s3prl.run_downstream")
        sys.argv = [options.module, *options.args]
        runpy.run_module(options.module, run_name="__main__", alter_sys=True)
    except UserError as err:
        print(f"sprune s3prl bridge: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent package is missing
        return False


if __name__ == "__main__":
    # Use the package's copy of this module, not a second one named __main__.
    from sprune.upstream import s3prl_bridge

    sys.exit(s3prl_bridge.main())
