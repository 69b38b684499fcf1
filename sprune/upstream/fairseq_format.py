"""fairseq checkpoints, as s3prl uses them.

* s3prl's converted format (`python -m s3prl.upstream.{wav2vec2,hubert}.convert`): a dict
  with `task_cfg`, `model_cfg` and `model_weight` (HuBERT adds `dictionaries_symbols`).
* A raw fairseq / unilm checkpoint that `torch.load(weights_only=True)` can read: `model`
  (the state dict) with `cfg` = {"model": ..., "task": ...} (fairseq) or a flat model config
  (unilm WavLM). Checkpoints that need unsafe unpickling are refused by `tensors.torch_load`.
"""
from __future__ import annotations

import ast
import operator
from typing import Any

import torch

from sprune.errors import UserError
from sprune.upstream.config import UpstreamConfig, dense_config
from sprune.upstream.keymap import (WEIGHT_OR_BIAS, ConvertedWeights, convert_keys, flatten,
                                    pos_conv_rules, rule)

DEFAULT_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"

RULES = [
    rule(rf"feature_extractor\.conv_layers\.(\d+)\.0\.{WEIGHT_OR_BIAS}",
         r"feature_extractor.conv_layers.\1.conv.\2"),
    rule(rf"feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?{WEIGHT_OR_BIAS}",
         r"feature_extractor.conv_layers.\1.norm.\2"),
    rule(rf"layer_norm\.{WEIGHT_OR_BIAS}", r"feature_projection.layer_norm.\1"),
    rule(rf"post_extract_proj\.{WEIGHT_OR_BIAS}", r"feature_projection.projection.\1"),
    *pos_conv_rules("encoder.pos_conv.0"),
    rule(rf"encoder\.layer_norm\.{WEIGHT_OR_BIAS}", r"encoder.layer_norm.\1"),
    rule(r"encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight",
         "encoder.rel_attn_embed.weight"),
    rule(rf"encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.{WEIGHT_OR_BIAS}",
         r"encoder.layers.\1.attention.\2.\3"),
    rule(rf"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.{WEIGHT_OR_BIAS}",
         r"encoder.layers.\1.attention.gate.linear.\2"),
    rule(r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"encoder.layers.\1.attention.gate.const",
         transform=flatten),
    rule(rf"encoder\.layers\.(\d+)\.self_attn_layer_norm\.{WEIGHT_OR_BIAS}",
         r"encoder.layers.\1.layer_norm.\2"),
    rule(rf"encoder\.layers\.(\d+)\.fc1\.{WEIGHT_OR_BIAS}",
         r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    rule(rf"encoder\.layers\.(\d+)\.fc2\.{WEIGHT_OR_BIAS}",
         r"encoder.layers.\1.feed_forward.output_dense.\2"),
    rule(rf"encoder\.layers\.(\d+)\.final_layer_norm\.{WEIGHT_OR_BIAS}",
         r"encoder.layers.\1.final_layer_norm.\2"),
]
# Pre-training heads: masking embedding, quantizer, target projections, HuBERT label embeddings.
IGNORE = [r"mask_emb", r"quantizer\..*", r"project_q\..*", r"project_inp\..*",
          r"final_proj\..*", r"label_embs_concat", r"target_glu\..*"]

_BINOPS = {ast.Add: operator.add, ast.Mult: operator.mul}


def parse_conv_layers(spec: str, where: str) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers` string, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4".

    Evaluated over literals, `+` and `*` only (it is configuration, not code).
    """
    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [evaluate(n) for n in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](evaluate(node.left), evaluate(node.right))
        raise ValueError(ast.dump(node))

    try:
        layers = evaluate(ast.parse(spec, mode="eval").body)
        layers = [tuple(int(v) for v in layer) for layer in layers]
        if not layers or any(len(layer) != 3 for layer in layers):
            raise ValueError(spec)
    except (SyntaxError, ValueError, TypeError):
        raise UserError(f"{where}: conv_feature_layers '{spec}' is not a list of "
                        "(channels, kernel, stride) tuples") from None
    return layers


def detect_family(model_cfg: dict[str, Any], keys: list[str]) -> str:
    if model_cfg.get("relative_position_embedding") or any(
            "relative_attention_bias" in k or "grep_linear" in k for k in keys):
        return "wavlm"
    if (model_cfg.get("_name") == "hubert" or "label_rate" in model_cfg
            or "label_embs_concat" in keys):
        return "hubert"
    return "wav2vec2"


def config_from_fairseq(model_cfg: dict[str, Any], task_cfg: dict[str, Any], family: str,
                        where: str) -> UpstreamConfig:
    """Translate a fairseq / unilm model config (plus task config) into an `UpstreamConfig`."""
    if "w2v_args" in model_cfg or "w2v_path" in model_cfg:
        raise UserError(f"{where} is a fine-tuned fairseq model (Wav2VecCtc); pass the "
                        "pre-trained checkpoint it was fine-tuned from")
    get = model_cfg.get
    checks = [("activation_fn", get("activation_fn", "gelu"), "gelu"),
              ("layer_type", get("layer_type", "transformer"), "transformer"),
              ("pos_conv_depth", get("pos_conv_depth", 1), 1)]
    for key, value, wanted in checks:
        if value != wanted:
            raise UserError(f"{where}: model config '{key}' is {value!r}; sprune's upstream "
                            f"supports only {wanted!r}")
    mode = get("extractor_mode", "default")
    if mode not in ("default", "layer_norm"):
        raise UserError(f"{where}: extractor_mode '{mode}' must be 'default' or 'layer_norm'")
    extra: dict[str, Any] = {}
    if family == "wavlm":
        relative = bool(get("relative_position_embedding", False))
        extra = {"relative_position_buckets": get("num_buckets", 320) if relative else 0,
                 "relative_position_max_distance": get("max_distance", 1280) if relative else 0,
                 "gated_relative_position": relative and bool(get("gru_rel_pos", False))}
    normalize = bool(task_cfg.get("normalize", get("normalize", False)))
    try:
        return dense_config(
            family, extractor_mode="group_norm" if mode == "default" else "layer_norm",
            conv_layers=parse_conv_layers(get("conv_feature_layers", DEFAULT_CONV), where),
            conv_bias=bool(get("conv_bias", False)), embed_dim=get("encoder_embed_dim", 768),
            num_layers=get("encoder_layers", 12), num_heads=get("encoder_attention_heads", 12),
            ffn_dim=get("encoder_ffn_embed_dim", 3072),
            layer_norm_first=bool(get("layer_norm_first", False)),
            pos_conv_kernel=get("conv_pos", 128), pos_conv_groups=get("conv_pos_groups", 16),
            normalize_waveform=normalize,
            feature_projection_dropout=float(get("dropout_input", 0.0)),
            hidden_dropout=float(get("dropout", 0.1)),
            attention_dropout=float(get("attention_dropout", 0.1)),
            activation_dropout=float(get("activation_dropout", 0.0)),
            layerdrop=float(get("encoder_layerdrop", 0.0)), **extra)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def read_fairseq(checkpoint: dict[str, Any], where: str) -> tuple[UpstreamConfig, ConvertedWeights]:
    """Config and sprune-named weights from a loaded fairseq-style checkpoint dict."""
    if "model_weight" in checkpoint:  # s3prl's converted format
        state, model_cfg = checkpoint["model_weight"], checkpoint.get("model_cfg")
        task_cfg = checkpoint.get("task_cfg") or {}
    else:
        state, cfg = checkpoint.get("model"), checkpoint.get("cfg")
        if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
            model_cfg, task_cfg = cfg["model"], cfg.get("task") or {}
        else:
            model_cfg, task_cfg = cfg, {}
    if not isinstance(model_cfg, dict) or not isinstance(state, dict):
        raise UserError(f"{where}: fairseq checkpoint without a model config and state dict "
                        "(expected task_cfg/model_cfg/model_weight or cfg/model)")
    family = detect_family(model_cfg, list(state))
    config = config_from_fairseq(model_cfg, task_cfg if isinstance(task_cfg, dict) else {},
                                 family, where)
    converted = convert_keys(state, RULES, IGNORE)
    if "post_extract_proj.weight" not in state and config.conv_channels == config.embed_dim:
        # fairseq skips the projection when the sizes already agree: it is the identity.
        converted.weights["feature_projection.projection.weight"] = torch.eye(config.embed_dim)
        converted.weights["feature_projection.projection.bias"] = torch.zeros(config.embed_dim)
        for name in ("weight", "bias"):
            converted.origin[f"feature_projection.projection.{name}"] = "(identity projection)"
    return config, converted
