"""sprune LMs to and from ESPnet: espnet2's `TransformerLM` and its on-disk LM checkpoint.

An ESPnet LM on disk is what `espnet2.tasks.lm.LMTask.build_model_from_file(config, model)`
reads (what `asr_inference.py --lm_train_config --lm_file` loads beside an ASR model):

    config.yaml   lm: transformer, lm_conf: {...}, model: lm, model_conf, token_list: [...],
                  plus the keys LMTask.build_model reads (init) and the preprocessing ones an
                  ESPnet training config carries (token_type, bpemodel, ...)
    model.pth     torch.save of ESPnetLanguageModel.state_dict(): plain tensors, keys `lm.*`
    tokens.txt    the token list, one per line (line i + 1 holds id i)
    bpe.model     the sentencepiece units, when the LM has them

The two models have the same layout (`sprune.lm.config`); weights map one to one
(`espnet_name`). A few things only one side can express:

* Per-layer sizes (shrunk blocks) and factorized layers: espnet2's TransformerLM has neither,
  so only a uniform LM exports. A masked LM exports as it is: its zeros are weights.
* LayerNorm eps: ESPnet fixes 1e-12 in the blocks and the final norm, 1e-5 in the input
  layer; an LM with other values would score differently there, so it does not export.
* Dropout: ESPnet has separate residual and positional dropout rates, sprune one; import
  takes `dropout_rate` (dropout matters only for further training).
* Id 0: ESPnet's TransformerLM treats token 0 (`<blank>`) in its input as padding and masks
  it out of attention; sprune does not. An LM never reads `<blank>` (it is neither text nor
  `<sos/eos>`), so the two give the same scores on every real prefix.

Reading never unpickles: `torch.load(..., weights_only=True)` and `yaml.safe_load` only.
"""
from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from sprune.errors import UserError
from sprune.io import atomic_dir
from sprune.lm.config import LMConfig
from sprune.lm.model import TransformerLM

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.pth"
TOKENS_FILE = "tokens.txt"
BPE_FILE = "bpe.model"
SOS_EOS = "<sos/eos>"
PREFIX = "lm."                      # ESPnetLanguageModel holds the TransformerLM as `lm`
ESPNET_NORM_EPS = 1e-12
ESPNET_INPUT_NORM_EPS = 1e-5

# sprune module path -> espnet2 TransformerLM module path (the parameter name follows).
_TOP = {"embed": "embed", "input_proj": "encoder.embed.0", "input_norm": "encoder.embed.1",
        "final_norm": "encoder.after_norm", "output": "decoder"}
_BLOCK = {"attention.q": "self_attn.linear_q", "attention.k": "self_attn.linear_k",
          "attention.v": "self_attn.linear_v", "attention.out": "self_attn.linear_out",
          "ffn.up": "feed_forward.w_1", "ffn.down": "feed_forward.w_2",
          "attention_norm": "norm1", "ffn_norm": "norm2"}
_INT_KEYS = {"embed_unit": "embed_dim", "att_unit": "d_model", "head": "heads",
             "unit": "ffn_dim", "layer": "layers"}
_RATE_KEYS = ("dropout_rate", "positional_dropout_rate", "attention_dropout_rate")


def espnet_name(name: str) -> str:
    """The espnet2 TransformerLM name of sprune parameter `name` (dense layers only):
    `layers.1.ffn.up.weight` -> `encoder.encoders.1.feed_forward.w_1.weight`."""
    module, _, param = name.rpartition(".")
    if module in _TOP:
        return f"{_TOP[module]}.{param}"
    parts = module.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[2] in _BLOCK:
        return f"encoder.encoders.{parts[1]}.{_BLOCK[parts[2]]}.{param}"
    raise KeyError(f"sprune parameter '{name}' has no espnet2 TransformerLM counterpart")


def check_exportable(config: LMConfig, name: str = "the LM") -> None:
    """A `UserError` unless espnet2's TransformerLM can hold an LM of `config` exactly."""
    if not config.is_uniform:
        parts = []
        heads = [config.heads_of(i) for i in range(config.layers)]
        ffn = [config.ffn_of(i) for i in range(config.layers)]
        shrunk = [f"{key} {sizes}" for key, sizes, full in (("heads", heads, config.heads),
                                                             ("ffn", ffn, config.ffn_dim))
                  if sizes != [full] * config.layers]
        if shrunk:
            parts.append(f"per-layer sizes (shrunk: {', '.join(shrunk)})")
        if config.ranks:
            parts.append(f"factorized layers ({', '.join(sorted(config.ranks))})")
        raise UserError(f"LM {name} has {' and '.join(parts)}, which espnet2's TransformerLM "
                        "cannot hold; export the masked model, or use the sprune LM as the "
                        "scorer directly (it implements ESPnet's scorer interface)")
    if config.norm_eps != ESPNET_NORM_EPS or config.input_norm_eps != ESPNET_INPUT_NORM_EPS:
        raise UserError(f"LM {name} uses LayerNorm eps {config.norm_eps:g} (blocks) and "
                        f"{config.input_norm_eps:g} (input layer), but espnet2's TransformerLM "
                        f"fixes {ESPNET_NORM_EPS:g} and {ESPNET_INPUT_NORM_EPS:g}; only an LM "
                        "trained with those eps exports unchanged")


def to_espnet_state(model: TransformerLM, name: str = "the LM"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict of espnet2's TransformerLM, its `lm_conf`) holding `model`'s weights.

    Keys have no `lm.` prefix (that belongs to ESPnetLanguageModel): `embed.weight` [V, E],
    `encoder.embed.0.weight` [D, E], `encoder.encoders.{i}.feed_forward.w_1.weight` [F, D],
    ..., `decoder.weight` [V, D]. The vocabulary size V is not in lm_conf (ESPnet takes it
    from the token list). A non-uniform model is a UserError.
    """
    config = model.config
    check_exportable(config, name)
    state = {espnet_name(n): t.detach().cpu().clone().contiguous()
             for n, t in model.state_dict().items()}
    lm_conf = {"pos_enc": "sinusoidal" if config.pos_enc == "sinusoidal" else None,
               "embed_unit": config.embed_dim, "att_unit": config.d_model,
               "head": config.heads, "unit": config.ffn_dim, "layer": config.layers,
               "dropout_rate": config.dropout, "positional_dropout_rate": config.dropout,
               "attention_dropout_rate": config.attention_dropout}
    return state, lm_conf


def espnet_defaults() -> dict[str, Any]:
    """espnet2 TransformerLM's keyword defaults (what a key missing from lm_conf means)."""
    from espnet2.lm.transformer_lm import TransformerLM as EspnetTransformerLM

    return {k: p.default for k, p in inspect.signature(EspnetTransformerLM).parameters.items()
            if k != "vocab_size" and p.default is not inspect.Parameter.empty}


def lm_config_from_espnet(lm_conf: Mapping[str, Any], vocab_size: int,
                          where: str = "lm_conf") -> LMConfig:
    """The sprune `LMConfig` of an espnet2 TransformerLM built with `lm_conf` (ESPnet's
    defaults fill missing keys); a key or value ESPnet would not take is a UserError."""
    if not isinstance(lm_conf, Mapping):
        raise UserError(f"{where}: lm_conf must be a mapping, not {type(lm_conf).__name__}")
    defaults = espnet_defaults()
    unknown = [k for k in lm_conf if k not in defaults]
    if unknown:
        raise UserError(f"{where}: lm_conf key '{unknown[0]}' is not an option of espnet2's "
                        f"TransformerLM ({', '.join(defaults)})")
    conf = {**defaults, **lm_conf}
    for key in _INT_KEYS:
        value = conf[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{where}: lm_conf {key} {value!r} must be a whole number >= 1")
    for key in _RATE_KEYS:
        value = conf[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise UserError(f"{where}: lm_conf {key} {value!r} must be a number in [0, 1)")
    if conf["pos_enc"] not in (None, "sinusoidal"):
        raise UserError(f"{where}: lm_conf pos_enc {conf['pos_enc']!r} is not one of espnet2 "
                        "TransformerLM's (sinusoidal, or null for none)")
    if conf["att_unit"] % conf["head"]:
        raise UserError(f"{where}: lm_conf att_unit {conf['att_unit']} is not a multiple of "
                        f"head {conf['head']}")
    return LMConfig(vocab_size=vocab_size, pos_enc="sinusoidal" if conf["pos_enc"] else "none",
                    dropout=float(conf["dropout_rate"]),
                    attention_dropout=float(conf["attention_dropout_rate"]),
                    norm_eps=ESPNET_NORM_EPS, input_norm_eps=ESPNET_INPUT_NORM_EPS,
                    **{ours: conf[theirs] for theirs, ours in _INT_KEYS.items()})


def from_espnet_state(state: Mapping[str, Any], lm_conf: Mapping[str, Any], vocab_size: int,
                      where: str = "the ESPnet LM") -> TransformerLM:
    """A sprune TransformerLM (eval mode) from the state dict of an espnet2 TransformerLM
    (keys without the `lm.` prefix) built with `lm_conf` for `vocab_size` tokens.

    The first key that does not fit (unexpected, wrong shape, missing) is a UserError
    naming it; `where` names the source in messages.
    """
    model = TransformerLM(lm_config_from_espnet(lm_conf, vocab_size, where))
    ours = {espnet_name(n): n for n in model.state_dict()}
    expected = model.state_dict()
    for key, tensor in state.items():
        if key not in ours:
            config = model.config
            raise UserError(f"{where}: key '{key}' does not fit espnet2's TransformerLM of the "
                            f"config (layer {config.layers}, att_unit {config.d_model}); is "
                            "this the LM checkpoint of that config?")
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"{where}: key '{key}' holds a {type(tensor).__name__}, not a tensor")
        shape = list(expected[ours[key]].shape)
        if list(tensor.shape) != shape:
            raise UserError(f"{where}: key '{key}' has shape {list(tensor.shape)} but the config "
                            f"(lm_conf and {vocab_size} tokens) asks for {shape}; the files do "
                            "not belong together")
    missing = [k for k in ours if k not in state]
    if missing:
        raise UserError(f"{where}: key '{missing[0]}' is missing; the files do not belong "
                        "together")
    model.load_state_dict({ours[k]: t for k, t in state.items()})
    return model.eval()


# -- files -------------------------------------------------------------------------------------
def espnet_config(lm_conf: Mapping[str, Any], token_list: Sequence[str],
                  bpemodel: str | None) -> dict[str, Any]:
    """The config.yaml document of an ESPnet LM: what `LMTask.build_model` reads (lm, lm_conf,
    model, model_conf, token_list, init) and the preprocessing keys of an ESPnet LM config."""
    return {"lm": "transformer", "lm_conf": dict(lm_conf), "model": "lm",
            "model_conf": {"ignore_id": 0}, "init": None, "token_list": list(token_list),
            "token_type": "bpe", "bpemodel": bpemodel, "use_preprocessor": True,
            "non_linguistic_symbols": None, "cleaner": None, "g2p": None}


def _check_out(out: Path, allowed: set[str], kind: str) -> None:
    """Refuse to replace a folder that holds anything but an earlier output of this kind."""
    if out.is_file() or (out.is_dir() and any(p.name not in allowed for p in out.iterdir())):
        raise UserError(f"--out {out} exists and is not {kind}; give a new folder")


def write_espnet_lm(out: str | os.PathLike, model: TransformerLM, token_list: Sequence[str],
                    bpe: str | os.PathLike | None = None, source: str = "the LM") -> Path:
    """Write `model` as an ESPnet LM folder `out` (atomically; see the module docstring).
    `token_list` names its ids, ending with `<sos/eos>`; `bpe` is copied beside it."""
    import shutil

    import yaml

    out = Path(out)
    _check_out(out, {CONFIG_FILE, MODEL_FILE, TOKENS_FILE, BPE_FILE}, "an ESPnet LM folder")
    state, lm_conf = to_espnet_state(model, source)
    if len(token_list) != model.config.vocab_size or token_list[-1] != SOS_EOS:
        raise UserError(f"the token list has {len(token_list)} tokens ending in "
                        f"'{token_list[-1] if token_list else ''}', but {source} needs "
                        f"{model.config.vocab_size} ending in {SOS_EOS}")
    bpemodel = str(out.resolve() / BPE_FILE) if bpe is not None else None
    document = espnet_config(lm_conf, token_list, bpemodel)
    header = (f"# espnet2 LM config written by `sprune lm export` from {source}; load it with\n"
              f"# LMTask.build_model_from_file(config.yaml, {MODEL_FILE})\n")
    with atomic_dir(out) as tmp:
        torch.save({PREFIX + k: t for k, t in state.items()}, tmp / MODEL_FILE)
        (tmp / TOKENS_FILE).write_text("".join(f"{t}\n" for t in token_list), encoding="utf-8")
        if bpe is not None:
            shutil.copyfile(bpe, tmp / BPE_FILE)
        (tmp / CONFIG_FILE).write_text(
            header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True),
            encoding="utf-8")
    return out


def read_espnet_config(path: str | os.PathLike) -> dict[str, Any]:
    """config.yaml of an espnet2 TransformerLM; anything else is a one-line UserError."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise UserError(f"--config {path} is a folder; give the config.yaml of an espnet2 LM "
                        "(exp/lm_*/config.yaml)")
    if not path.is_file():
        raise UserError(f"ESPnet LM config {path} does not exist; give the config.yaml of an "
                        "espnet2 LM (exp/lm_*/config.yaml)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: not valid YAML "
                        f"({getattr(err, 'problem', None) or 'syntax error'})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; give the config.yaml of an espnet2 "
                        "LM") from None
    if not isinstance(document, dict):
        raise UserError(f"{path}: not an ESPnet config (a YAML mapping with lm: and lm_conf:)")
    if "lm" not in document:
        acoustic = [k for k in ("encoder", "decoder", "frontend", "upstream") if k in document]
        if acoustic:
            shown = ", ".join(f"{k}: {document[k]}" for k in acoustic[:2])
            raise UserError(f"{path} is the config of an ESPnet acoustic model ({shown}), not "
                            "of a language model (no lm: key); give the LM's config.yaml "
                            "(exp/lm_*/config.yaml, --lm_train_config of the decoder)")
        raise UserError(f"{path} has no lm: key: not an espnet2 LM config; give the LM's "
                        "config.yaml (exp/lm_*/config.yaml)")
    if document["lm"] != "transformer":
        raise UserError(f"{path}: only espnet2 TransformerLM is supported; got "
                        f"{document['lm']}")
    if document.get("model", "lm") != "lm":
        raise UserError(f"{path}: model {document['model']!r} is not supported; only "
                        "ESPnetLanguageModel (model: lm)")
    return document


def read_token_list(value: Any, config: Path) -> list[str]:
    """config.yaml's token_list: a list, or a file (as ESPnet allows; relative paths from the
    current directory, then from the config's folder); it must end with `<sos/eos>`."""
    if isinstance(value, str):
        path = Path(value)
        if not path.is_absolute() and not path.is_file():
            path = config.parent / value
        if not path.is_file():
            raise UserError(f"{config}: token_list file {value} does not exist")
        value = path.read_text(encoding="utf-8").splitlines()
    if (not isinstance(value, list) or len(value) < 3
            or not all(isinstance(t, str) for t in value)):
        raise UserError(f"{config}: token_list must be a list of at least 3 tokens (or a "
                        "tokens.txt file)")
    if value[-1] != SOS_EOS:
        raise UserError(f"{config}: token_list ends with '{value[-1]}', not {SOS_EOS}: ESPnet "
                        f"LMs predict {SOS_EOS} as their last id")
    return value


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """The tensors of an ESPnet .pth (weights only, never unpickled code), `lm.` kept."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--model {path} is a folder; give the LM's .pth file "
                        "(e.g. exp/lm_*/valid.loss.ave.pth)")
    if not path.is_file():
        raise UserError(f"ESPnet LM model {path} does not exist; give the LM's .pth file "
                        "(e.g. exp/lm_*/valid.loss.ave.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle and zip errors come in many types
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = (f"it pickles {found[1]}, which is never unpickled here" if found
                  else "not a torch.save file")
        raise UserError(f"{path}: cannot be read as a weights-only torch file ({reason}); "
                        "give the model .pth (a state dict), not a training checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("module"), dict):
        state = state["module"]  # deepspeed, as ESPnet's loader does
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def load_espnet_lm(config_file: str | os.PathLike, model_file: str | os.PathLike
                   ) -> tuple[TransformerLM, list[str], dict[str, Any]]:
    """(sprune TransformerLM, token_list, config.yaml document) of an ESPnet LM on disk."""
    config_file = Path(config_file)
    document = read_espnet_config(config_file)
    token_list = read_token_list(document.get("token_list"), config_file)
    lm_conf = document.get("lm_conf") or {}
    lm_config_from_espnet(lm_conf, len(token_list), str(config_file))  # its errors name the yaml
    state = load_state_file(model_file)
    unexpected = [k for k in state if not k.startswith(PREFIX)]
    if unexpected:
        raise UserError(f"{model_file}: key '{unexpected[0]}' does not fit an ESPnet LM (its "
                        f"keys start with '{PREFIX}'); is this the .pth of {config_file}?")
    stripped = {k[len(PREFIX):]: t for k, t in state.items()}
    model = from_espnet_state(stripped, lm_conf, len(token_list), str(model_file))
    return model, token_list, document


def check_token_list(token_list: Sequence[str], bpe: str | os.PathLike, where: str) -> None:
    """`token_list` must name the ids of the BPE model `bpe` (its pieces, then `<sos/eos>`)."""
    from sprune.lm.vocab import LMVocab

    theirs = LMVocab.load(bpe).token_list
    if len(theirs) != len(token_list):
        raise UserError(f"{where}: token_list has {len(token_list)} tokens but BPE model {bpe} "
                        f"gives {len(theirs)} (its pieces + {SOS_EOS}); give the BPE model "
                        "the LM was trained with")
    for i, (mine, other) in enumerate(zip(token_list, theirs)):
        if mine != other:
            raise UserError(f"{where}: token_list id {i} is '{mine}' but BPE model {bpe} has "
                            f"'{other}' there; a sprune LM's ids are its BPE model's, so give "
                            "the BPE model the LM was trained with")


def import_lm(config_file: str | os.PathLike, model_file: str | os.PathLike,
              out: str | os.PathLike, bpe: str | os.PathLike | None = None) -> TransformerLM:
    """ESPnet LM (config.yaml + .pth [+ BPE model]) -> sprune LM folder `out`."""
    from sprune.lm.checkpoint import CONFIG_FILE as LM_CONFIG, VOCAB_FILE, WEIGHTS_FILE, save_lm

    out = Path(out)
    _check_out(out, {LM_CONFIG, VOCAB_FILE, WEIGHTS_FILE}, "a sprune LM folder")
    if bpe is not None and not Path(bpe).is_file():
        raise UserError(f"BPE model {bpe} does not exist; give the sentencepiece .model the "
                        "LM was trained with, or leave --bpe out")
    model, token_list, document = load_espnet_lm(config_file, model_file)
    if bpe is not None:
        check_token_list(token_list, bpe, str(config_file))
    info = {"imported_from": {"format": "espnet2 TransformerLM",
                              "config": str(Path(config_file).resolve()),
                              "model": str(Path(model_file).resolve()),
                              "bpe": None if bpe is None else str(Path(bpe).resolve())},
            "espnet_lm_conf": document.get("lm_conf") or {}}
    save_lm(out, model, bpe, info)
    return model


def export_lm(lm_dir: str | os.PathLike, out: str | os.PathLike,
              token_list_file: str | os.PathLike | None = None) -> TransformerLM:
    """sprune LM folder -> ESPnet LM folder `out`. The token list comes from the LM's BPE
    model, or from `token_list_file` (tokens.txt) for an LM without one."""
    from sprune.lm.checkpoint import load_lm, vocab_path
    from sprune.lm.vocab import LMVocab, check_vocab_matches

    model, _ = load_lm(lm_dir)
    check_exportable(model.config, str(lm_dir))
    bpe = vocab_path(lm_dir)
    if token_list_file is not None:
        path = Path(token_list_file)
        if not path.is_file():
            raise UserError(f"--token-list {path} does not exist")
        token_list = read_token_list(str(path), path)
        if len(token_list) != model.config.vocab_size:
            raise UserError(f"--token-list {path} has {len(token_list)} tokens but LM {lm_dir} "
                            f"predicts {model.config.vocab_size}")
        if bpe is not None:
            check_token_list(token_list, bpe, f"--token-list {path}")
    elif bpe is not None:
        vocab = LMVocab.load(bpe)
        check_vocab_matches(vocab, model.config.vocab_size, lm_dir)
        token_list = vocab.token_list
    else:
        raise UserError(f"LM {lm_dir} has no bpe.model, so its token list is unknown; pass "
                        "--token-list tokens.txt (e.g. the one it was imported with)")
    write_espnet_lm(out, model, token_list, bpe, str(lm_dir))
    return model
