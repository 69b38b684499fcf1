"""Hugging Face model dirs: `config.json` + `model.safetensors` (or `pytorch_model.bin`,
or sharded with an index) of a Wav2Vec2Model / HubertModel / WavLMModel, bare or inside a
head model (ForCTC, ForPreTraining, ForSequenceClassification...: `wav2vec2.` / `hubert.` /
`wavlm.` prefixes, whose head weights are ignored).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sprune.errors import UserError
from sprune.io import read_json_object
from sprune.upstream.config import UpstreamConfig, dense_config
from sprune.upstream.keymap import (WEIGHT_OR_BIAS, ConvertedWeights, convert_keys,
                                    pos_conv_rules, rule, transformer_layer_rules)
from sprune.upstream.tensors import load_tensor_file

MODEL_TYPES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")

# Hugging Face's defaults (Wav2Vec2Config and friends), for keys a config.json leaves out.
DEFAULTS: dict[str, Any] = {
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": False, "feat_extract_norm": "group",
    "feat_extract_activation": "gelu", "hidden_act": "gelu", "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "do_stable_layer_norm": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "layer_norm_eps": 1e-5, "hidden_dropout": 0.1,
    "attention_dropout": 0.1, "activation_dropout": 0.1, "feat_proj_dropout": 0.0,
    "layerdrop": 0.1, "feat_proj_layer_norm": True, "conv_pos_batch_norm": False,
    "num_buckets": 320, "max_bucket_distance": 800, "add_adapter": False,
    "adapter_attn_dim": None,
}

RULES = [
    rule(rf"feature_extractor\.conv_layers\.(\d+)\.conv\.{WEIGHT_OR_BIAS}",
         r"feature_extractor.conv_layers.\1.conv.\2"),
    rule(rf"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.{WEIGHT_OR_BIAS}",
         r"feature_extractor.conv_layers.\1.norm.\2"),
    rule(rf"feature_projection\.(layer_norm|projection)\.{WEIGHT_OR_BIAS}",
         r"feature_projection.\1.\2"),
    *pos_conv_rules("encoder.pos_conv_embed.conv"),
    rule(rf"encoder\.layer_norm\.{WEIGHT_OR_BIAS}", r"encoder.layer_norm.\1"),
    rule(r"encoder\.layers\.0\.attention\.rel_attn_embed\.weight", "encoder.rel_attn_embed.weight"),
    *transformer_layer_rules("encoder.layers"),
]
IGNORE = [r"masked_spec_embed"]


def config_from_hf(hf: dict[str, Any], where: str, normalize: bool = False) -> UpstreamConfig:
    """Translate a Hugging Face config.json mapping into an `UpstreamConfig`."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise UserError(f"{where}: model_type '{model_type}' is not supported; sprune loads "
                        f"{', '.join(MODEL_TYPES)}")
    get = lambda key: hf.get(key, DEFAULTS[key])  # noqa: E731
    for key in ("feat_extract_activation", "hidden_act"):
        if get(key) != "gelu":
            raise UserError(f"{where}: '{key}' is '{get(key)}'; sprune's upstream supports gelu")
    for key in ("add_adapter", "adapter_attn_dim", "conv_pos_batch_norm"):
        value = get(key)
        if value:
            raise UserError(f"{where}: '{key}' = {value} is not supported by sprune's upstream")
    conv = [get("conv_dim"), get("conv_kernel"), get("conv_stride")]
    if len({len(c) for c in conv}) != 1:
        raise UserError(f"{where}: conv_dim, conv_kernel and conv_stride differ in length")
    norm = get("feat_extract_norm")
    if norm not in ("group", "layer"):
        raise UserError(f"{where}: feat_extract_norm '{norm}' must be 'group' or 'layer'")
    family = MODEL_TYPES[model_type]
    extra: dict[str, Any] = {}
    if family == "wavlm":
        extra = {"relative_position_buckets": get("num_buckets"),
                 "relative_position_max_distance": get("max_bucket_distance")}
    if family == "hubert":
        extra["feature_projection_layer_norm"] = bool(get("feat_proj_layer_norm"))
    try:
        return dense_config(
            family, extractor_mode=f"{norm}_norm", conv_bias=bool(get("conv_bias")),
            conv_layers=[tuple(layer) for layer in zip(*conv)], embed_dim=get("hidden_size"),
            num_layers=get("num_hidden_layers"), num_heads=get("num_attention_heads"),
            ffn_dim=get("intermediate_size"), layer_norm_first=bool(get("do_stable_layer_norm")),
            pos_conv_kernel=get("num_conv_pos_embeddings"),
            pos_conv_groups=get("num_conv_pos_embedding_groups"),
            layer_norm_eps=float(get("layer_norm_eps")), normalize_waveform=normalize,
            feature_projection_dropout=float(get("feat_proj_dropout")),
            hidden_dropout=float(get("hidden_dropout")),
            attention_dropout=float(get("attention_dropout")),
            activation_dropout=float(get("activation_dropout")),
            layerdrop=float(get("layerdrop")), **extra)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None




def read_hf_state(directory: Path) -> dict:
    """All tensors of a model dir: single file or shards listed in an index."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return load_tensor_file(directory / name)
    for name in INDEX_FILES:
        if (directory / name).is_file():
            index = read_json_object(directory / name).get("weight_map", {})
            state: dict = {}
            for shard in sorted(set(index.values())):
                if not (directory / shard).is_file():
                    raise UserError(f"{directory / name} lists shard {shard}, which is missing")
                state.update(load_tensor_file(directory / shard))
            return state
    raise UserError(f"{directory}: no weights found (expected {' or '.join(WEIGHT_FILES)} "
                    "beside config.json)")


def read_hf_dir(directory: Path) -> tuple[UpstreamConfig, ConvertedWeights]:
    """Config and sprune-named weights of a Hugging Face model dir."""
    hf = read_json_object(directory / "config.json")
    normalize = False
    if (directory / "preprocessor_config.json").is_file():
        normalize = bool(read_json_object(directory / "preprocessor_config.json").get("do_normalize"))
    config = config_from_hf(hf, str(directory / "config.json"), normalize)
    state = read_hf_state(directory)
    prefix = f"{hf['model_type']}."
    if any(key.startswith(prefix) for key in state):
        # A head model: keep the base model's tensors, drop the head's.
        state = {key[len(prefix):]: value for key, value in state.items()
                 if key.startswith(prefix)}
    return config, convert_keys(state, RULES, IGNORE)
