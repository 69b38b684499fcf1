"""torchaudio state dicts (`torch.save(model.state_dict())` of `wav2vec2_model`, the
`hubert_*` builders or `wavlm_model`): keys `feature_extractor.*` and `encoder.*`.

A state dict carries no config. sprune takes it from a sidecar JSON beside the checkpoint
(`model.pt` -> `model.json`) holding the torchaudio builder's keyword arguments (plus
optional "family" and "normalize_waveform"), or infers it from the tensor shapes: conv
strides are taken as the standard wav2vec2 ones, the head count from WavLM's gate (else 12
for D = 768, 16 for 1024 and 1280), pre-LN and waveform normalisation from a layer-norm
extractor (true of every published model and torchaudio bundle). wav2vec2 and
HuBERT state dicts are identical in form; the family comes from the spec
(`torchaudio:hubert:PATH`) or the sidecar, defaulting to wav2vec2.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

from sprune.errors import UserError
from sprune.upstream.config import FAMILIES, STANDARD_CONV_LAYERS, UpstreamConfig, dense_config
from sprune.upstream.keymap import (WEIGHT_OR_BIAS, ConvertedWeights, convert_keys,
                                    pos_conv_rules, rule, split3, transformer_layer_rules)

T = r"encoder\.transformer"
RULES = [
    rule(rf"feature_extractor\.conv_layers\.(\d+)\.conv\.{WEIGHT_OR_BIAS}",
         r"feature_extractor.conv_layers.\1.conv.\2"),
    rule(rf"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.{WEIGHT_OR_BIAS}",
         r"feature_extractor.conv_layers.\1.norm.\2"),
    rule(rf"encoder\.feature_projection\.(layer_norm|projection)\.{WEIGHT_OR_BIAS}",
         r"feature_projection.\1.\2"),
    *pos_conv_rules("encoder.transformer.pos_conv_embed.conv"),
    rule(rf"{T}\.layer_norm\.{WEIGHT_OR_BIAS}", r"encoder.layer_norm.\1"),
    rule(rf"{T}\.layers\.0\.attention\.rel_attn_embed\.weight", "encoder.rel_attn_embed.weight"),
    # WavLM keeps q/k/v packed in an nn.MultiheadAttention.
    rule(rf"{T}\.layers\.(\d+)\.attention\.attention\.in_proj_(weight|bias)",
         r"encoder.layers.\1.attention.q_proj.\2", r"encoder.layers.\1.attention.k_proj.\2",
         r"encoder.layers.\1.attention.v_proj.\2", transform=split3),
    rule(rf"{T}\.layers\.(\d+)\.attention\.attention\.out_proj\.{WEIGHT_OR_BIAS}",
         r"encoder.layers.\1.attention.out_proj.\2"),
    *transformer_layer_rules("encoder.transformer.layers"),
]
IGNORE = [r"aux\..*"]
STANDARD_STRIDES = {10: 5, 3: 2, 2: 2}
HEADS_BY_DIM = {768: 12, 1024: 16, 1280: 16}

BUILDER_KEYS = {
    "extractor_mode", "extractor_conv_layer_config", "extractor_conv_bias", "encoder_embed_dim",
    "encoder_projection_dropout", "encoder_pos_conv_kernel", "encoder_pos_conv_groups",
    "encoder_num_layers", "encoder_num_heads", "encoder_attention_dropout",
    "encoder_ff_interm_features", "encoder_ff_interm_dropout", "encoder_dropout",
    "encoder_layer_norm_first", "encoder_layer_drop", "aux_num_out", "encoder_num_buckets",
    "encoder_max_distance", "family", "normalize_waveform",
}


def is_torchaudio_state(state: Mapping[str, Any]) -> bool:
    return any(k.startswith("encoder.transformer.") for k in state) and any(
        k.startswith("feature_extractor.conv_layers.") for k in state)


def config_from_builder_args(args: dict[str, Any], family: str, where: str) -> UpstreamConfig:
    """An `UpstreamConfig` from torchaudio builder kwargs (`wav2vec2_model` / `wavlm_model`)."""
    unknown = sorted(set(args) - BUILDER_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}'; use the keyword arguments of "
                        "torchaudio.models.wav2vec2_model / wavlm_model (plus 'family')")
    required = ["extractor_mode", "extractor_conv_bias", "encoder_embed_dim",
                "encoder_num_layers", "encoder_num_heads", "encoder_ff_interm_features",
                "encoder_layer_norm_first"]
    missing = [k for k in required if k not in args]
    if missing:
        raise UserError(f"{where}: key '{missing[0]}' is missing")
    extra: dict[str, Any] = {}
    if family == "wavlm":
        extra = {"relative_position_buckets": args.get("encoder_num_buckets", 320),
                 "relative_position_max_distance": args.get("encoder_max_distance", 800)}
    conv = args.get("extractor_conv_layer_config") or STANDARD_CONV_LAYERS
    try:
        return dense_config(
            family, extractor_mode=args["extractor_mode"],
            conv_layers=[tuple(layer) for layer in conv],
            conv_bias=bool(args["extractor_conv_bias"]), embed_dim=args["encoder_embed_dim"],
            num_layers=args["encoder_num_layers"], num_heads=args["encoder_num_heads"],
            ffn_dim=args["encoder_ff_interm_features"],
            layer_norm_first=bool(args["encoder_layer_norm_first"]),
            pos_conv_kernel=args.get("encoder_pos_conv_kernel", 128),
            pos_conv_groups=args.get("encoder_pos_conv_groups", 16),
            feature_projection_dropout=float(args.get("encoder_projection_dropout", 0.0)),
            hidden_dropout=float(args.get("encoder_dropout", 0.0)),
            attention_dropout=float(args.get("encoder_attention_dropout", 0.0)),
            activation_dropout=float(args.get("encoder_ff_interm_dropout", 0.0)),
            layerdrop=float(args.get("encoder_layer_drop", 0.0)),
            normalize_waveform=bool(args.get("normalize_waveform", False)), **extra)
    except (TypeError, ValueError):
        raise UserError(f"{where}: values of the wrong type; use the torchaudio builder's "
                        "keyword arguments") from None


def infer_config(state: Mapping[str, Tensor], family: str, where: str) -> UpstreamConfig:
    """Infer the architecture from tensor shapes (see the module docstring)."""
    def need_sidecar(what: str) -> UserError:
        return UserError(f"{where}: cannot infer {what} from the weights; write the torchaudio "
                         f"builder's keyword arguments to {Path(where).with_suffix('.json')}")

    conv_ids = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(
        r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", k))})
    conv_layers = []
    for i in conv_ids:
        channels, _, kernel = state[f"feature_extractor.conv_layers.{i}.conv.weight"].shape
        if kernel not in STANDARD_STRIDES:
            raise need_sidecar(f"the stride of conv layer {i} (kernel {kernel})")
        conv_layers.append((int(channels), int(kernel), STANDARD_STRIDES[kernel]))
    if len(conv_layers) < 2:
        raise need_sidecar("the conv extractor's norm mode")
    layer_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in state
    projection = state.get("encoder.feature_projection.projection.weight")
    pos_v = next((v for k, v in state.items() if k.startswith(
        "encoder.transformer.pos_conv_embed.conv.") and k.endswith(("weight_v", "original1"))),
        None)
    ffn = state.get("encoder.transformer.layers.0.feed_forward.intermediate_dense.weight")
    if projection is None or pos_v is None or ffn is None:
        raise UserError(f"{where}: torchaudio state dict without feature projection, positional "
                        "conv or layer 0; is it complete?")
    embed_dim = int(projection.shape[0])
    const = state.get("encoder.transformer.layers.0.attention.gru_rel_pos_const")
    num_heads = int(const.shape[1]) if const is not None else HEADS_BY_DIM.get(embed_dim)
    if num_heads is None:
        raise need_sidecar(f"the number of attention heads (embed dim {embed_dim})")
    num_layers = len({m.group(1) for k in state if (m := re.match(
        r"encoder\.transformer\.layers\.(\d+)\.", k))})
    args = {
        "extractor_mode": "layer_norm" if layer_norm else "group_norm",
        "extractor_conv_layer_config": conv_layers,
        "extractor_conv_bias": "feature_extractor.conv_layers.0.conv.bias" in state,
        "encoder_embed_dim": embed_dim, "encoder_num_layers": num_layers,
        "encoder_num_heads": num_heads, "encoder_ff_interm_features": int(ffn.shape[0]),
        "encoder_layer_norm_first": layer_norm, "normalize_waveform": layer_norm,
        "encoder_pos_conv_kernel": int(pos_v.shape[-1]),
        "encoder_pos_conv_groups": embed_dim // int(pos_v.shape[1]),
    }
    embed = state.get("encoder.transformer.layers.0.attention.rel_attn_embed.weight")
    if embed is not None:
        args["encoder_num_buckets"] = int(embed.shape[0])
    return config_from_builder_args(args, family, where)


def read_torchaudio(state: Mapping[str, Tensor], path: Path,
                    family: str | None) -> tuple[UpstreamConfig, ConvertedWeights]:
    """Config (sidecar JSON or inferred) and sprune-named weights of a torchaudio state dict."""
    where = str(path)
    sidecar = path.with_suffix(".json")
    args: dict[str, Any] | None = None
    if sidecar.is_file():
        try:
            args = json.loads(sidecar.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"{sidecar}:{err.lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(args, dict):
            raise UserError(f"{sidecar}: expected a JSON object of builder arguments")
    is_wavlm = any(".attention.gru_rel_pos_const" in k or ".attention.attention.in_proj" in k
                   for k in state)
    family = family or (args or {}).get("family") or ("wavlm" if is_wavlm else "wav2vec2")
    if family not in FAMILIES:
        raise UserError(f"{sidecar if args else where}: family '{family}' is not one of "
                        f"{', '.join(FAMILIES)}")
    if (family == "wavlm") != is_wavlm:
        raise UserError(f"{where}: the weights are {'' if is_wavlm else 'not '}WavLM's but the "
                        f"family is '{family}'")
    config = (config_from_builder_args(args, family, str(sidecar)) if args is not None
              else infer_config(state, family, where))
    return config, convert_keys(state, RULES, IGNORE)
