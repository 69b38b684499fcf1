"""Published architectures build with the reference parameter counts; parameter groups
name exactly the prunable weight matrices; the feature encoder can be frozen.

Big models are built on the meta device (shapes only), so this stays fast.
"""
from __future__ import annotations

import pytest
import torch
import torchaudio
import transformers

from sprune.upstream import UpstreamModel, preset_config, tiny_config
from sprune.upstream.hf_format import config_from_hf

# torchaudio builders of the same architectures (XLSR-53 = the Large LV-60k architecture,
# which torchaudio builds as wav2vec2_xlsr_300m; WavLM Base+ = the Base architecture).
REFERENCES = {
    "wav2vec2_base": torchaudio.models.wav2vec2_base,
    "wav2vec2_large": torchaudio.models.wav2vec2_large,
    "wav2vec2_large_lv60k": torchaudio.models.wav2vec2_large_lv60k,
    "wav2vec2_xlsr53": torchaudio.models.wav2vec2_xlsr_300m,
    "hubert_base": torchaudio.models.hubert_base,
    "hubert_large": torchaudio.models.hubert_large,
    "wavlm_base": torchaudio.models.wavlm_base,
    "wavlm_base_plus": torchaudio.models.wavlm_base,
    "wavlm_large": torchaudio.models.wavlm_large,
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str) -> UpstreamModel:
    with torch.device("meta"):
        return UpstreamModel(preset_config(name))


def test_wav2vec2_base_has_the_published_parameter_count():
    assert count(meta_model("wav2vec2_base")) == 94_370_944


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_preset_parameter_count_matches_torchaudio(name):
    with torch.device("meta"):
        reference = REFERENCES[name]()
    assert count(meta_model(name)) == count(reference)


@pytest.mark.parametrize("name,config_cls,model_cls", [
    ("wav2vec2_base", transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
    ("hubert_base", transformers.HubertConfig, transformers.HubertModel),
    ("wavlm_base", transformers.WavLMConfig, transformers.WavLMModel),
])
def test_hugging_face_default_configs_are_the_base_presets(name, config_cls, model_cls):
    hf_config = config_cls()
    ours = config_from_hf(hf_config.to_dict(), "config.json")
    preset = preset_config(name)
    for key in ("family", "extractor_mode", "conv_layers", "conv_bias", "embed_dim",
                "num_heads", "layers", "layer_norm_first", "pos_conv_kernel", "pos_conv_groups",
                "feature_projection_layer_norm", "relative_position_buckets",
                "relative_position_max_distance", "gated_relative_position"):
        assert getattr(ours, key) == getattr(preset, key), key
    with torch.device("meta"):
        reference = model_cls(hf_config)
    # Hugging Face adds the SpecAugment embedding (one vector of D) to the same architecture.
    assert count(meta_model(name)) == count(reference) - hf_config.hidden_size


def prunable_weights(model: UpstreamModel) -> set[str]:
    """Weight matrices and conv kernels, minus WavLM's gate and position embedding."""
    return {name for name, p in model.named_parameters() if p.dim() >= 2
            and ".gate." not in name and "rel_attn_embed" not in name}


@pytest.mark.parametrize("name", ["wav2vec2_base", "wavlm_base", "hubert_large"])
def test_parameter_groups_cover_the_prunable_weights(name):
    model = meta_model(name)
    config = model.config
    groups = model.parameter_groups()
    params = dict(model.named_parameters())
    for group, members in groups.items():
        assert members and set(members) <= set(params), group
    assert set(groups["all"]) == prunable_weights(model)
    assert len(groups["all"]) == len(set(groups["all"]))
    assert len(groups["conv_extractor"]) == len(config.conv_layers)
    assert groups["pos_conv"] == ["encoder.pos_conv.weight_v"]
    layer_groups = [f"layers.{i}.{part}" for i in range(config.num_layers)
                    for part in ("attention.q", "attention.k", "attention.v", "attention.out",
                                 "ffn.in", "ffn.out")]
    assert sorted(layer_groups) == sorted(g for g in groups if g.startswith("layers."))
    assert groups["transformer"] == [n for g in layer_groups for n in groups[g]]
    dim, ffn = config.embed_dim, config.layers[0].ffn_dim
    assert sum(params[n].numel() for n in groups["transformer"]) == \
        config.num_layers * (4 * dim * dim + 2 * dim * ffn)
    # Scales, biases and norms are 1-D, so "every tensor with >= 2 dims" means weights.
    assert params["encoder.pos_conv.weight_g"].dim() == 1


def test_parameter_groups_work_with_the_pruning_scope():
    from sprune.prune.scope import resolve_scope

    model = UpstreamModel(tiny_config("wavlm"))
    groups = model.parameter_groups()
    chosen = resolve_scope(model, preset="transformer", groups=groups)
    assert chosen == [n for n, _ in model.named_parameters() if n in set(groups["transformer"])]
    widened = resolve_scope(model, preset="transformer+extractor", groups=groups)
    assert set(widened) == set(groups["transformer"]) | set(groups["conv_extractor"])


def test_frozen_feature_encoder_gets_no_gradients_and_stays_in_eval_mode():
    model = UpstreamModel(tiny_config("wav2vec2", layerdrop=0.0), freeze_feature_encoder=True)
    model.train()
    assert not model.feature_extractor.training and model.encoder.training
    out = model(torch.randn(2, 4000), torch.tensor([4000, 3000]))
    sum(h.square().mean() for h in out.hidden_states).backward()
    for name, param in model.named_parameters():
        if name.startswith("feature_extractor."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None, name
    model.freeze_feature_encoder(False)
    model.train()
    assert model.feature_extractor.training
    assert all(p.requires_grad for p in model.feature_extractor.parameters())


@pytest.mark.parametrize("pre_ln", [False, True])
def test_frozen_front_end_trains_the_layers_alone(pre_ln):
    config = tiny_config("wav2vec2", layerdrop=0.0, layer_norm_first=pre_ln,
                         feature_projection_dropout=0.5)
    model = UpstreamModel(config, freeze_feature_encoder=True)
    model.freeze_front_end()
    model.train()
    front = model.front_end_modules()
    assert (model.encoder.layer_norm in front) == (not config.layer_norm_first)
    assert not any(m.training for m in front) and model.encoder.layers[0].training
    wavs = torch.randn(2, 4000)
    first = model(wavs).hidden_states
    assert torch.equal(first[0], model(wavs).hidden_states[0])   # no dropout in the front
    sum(h.square().mean() for h in first).backward()
    frozen = {f"{prefix}.{n}" for prefix, m in (("feature_projection", model.feature_projection),
                                               ("encoder.pos_conv", model.encoder.pos_conv))
              for n, _ in m.named_parameters()}
    if not config.layer_norm_first:
        frozen |= {"encoder.layer_norm.weight", "encoder.layer_norm.bias"}
    for name, param in model.named_parameters():
        if name.startswith("feature_extractor.") or name in frozen:
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None, name
    model.freeze_front_end(False)
    model.train()
    assert all(m.training for m in model.front_end_modules())
    assert all(p.requires_grad for m in front for p in m.parameters())


def test_training_mode_runs_with_dropout_and_layerdrop():
    config = tiny_config("wavlm", hidden_dropout=0.1, attention_dropout=0.1,
                         activation_dropout=0.1, feature_projection_dropout=0.1, layerdrop=0.5)
    model = UpstreamModel(config).train()
    torch.manual_seed(0)
    out = model(torch.randn(2, 4000))
    assert len(out.hidden_states) == config.num_layers + 1
    assert all(torch.isfinite(h).all() for h in out.hidden_states)


def test_normalize_waveform_uses_valid_samples_only():
    from sprune.upstream.model import normalize_waveforms

    wavs = torch.randn(2, 1000) * 3 + 1
    wavs[1, 600:] = 0
    out = normalize_waveforms(wavs, torch.tensor([1000, 600]))
    alone = torch.nn.functional.layer_norm(wavs[1, :600], (600,))
    assert torch.allclose(out[1, :600], alone, atol=1e-5)
    assert torch.equal(out[1, 600:], torch.zeros(400))
    assert torch.allclose(out[0], torch.nn.functional.layer_norm(wavs[0], (1000,)), atol=1e-5)
