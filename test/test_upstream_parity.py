"""Numerical parity of sprune's upstream with the reference implementations.

Tiny random models of each family are built with transformers, torchaudio and s3prl's copy
of fairseq, saved in that library's format, loaded by `sprune.upstream.load_upstream`, and
every hidden state is compared in eval mode (max abs diff <= 1e-4), unpadded and as a
padded batch of unequal lengths (valid frames only). Weights are perturbed away from their
initial values (unit norms, zero biases) so that every tensor's mapping matters.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torchaudio
import transformers

from sprune.upstream import UpstreamModel, load_upstream, save_upstream, tiny_config
from sprune.upstream.shrink import Selection, keep_everything, shrink_upstream

TOL = 1e-4
SAMPLES = 8000
LENGTHS = torch.tensor([8000, 6123, 3000])
CONV_DIMS = (16, 24, 24, 16, 16, 24, 32)  # varied per layer, as after channel pruning
KERNELS = (10, 3, 3, 3, 3, 2, 2)
STRIDES = (5, 2, 2, 2, 2, 2, 2)


def perturb(model: torch.nn.Module, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))


def padded_batch(seed: int = 0) -> torch.Tensor:
    wavs = 0.3 * torch.randn(len(LENGTHS), SAMPLES, generator=torch.Generator().manual_seed(seed))
    for i, length in enumerate(LENGTHS):
        wavs[i, length:] = 0.0
    return wavs


def assert_close(ours: list[torch.Tensor], reference: list[torch.Tensor],
                 frames: torch.Tensor | None = None) -> None:
    """Every hidden state equal within TOL (only the first `frames[b]` frames of item b)."""
    assert len(ours) == len(reference)
    for i, (a, b) in enumerate(zip(ours, reference)):
        assert a.shape == b.shape, f"hidden state {i}: {a.shape} vs {b.shape}"
        valid = frames if frames is not None else torch.full((a.shape[0],), a.shape[1])
        for item, count in enumerate(valid.tolist()):
            diff = (a[item, :count] - b[item, :count]).abs().max().item()
            assert diff <= TOL, f"hidden state {i}, item {item}: max abs diff {diff:.2e}"


# --- Hugging Face -----------------------------------------------------------------------------
HF_CLASSES = {
    "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
    "hubert": (transformers.HubertConfig, transformers.HubertModel),
    "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
}
HF_CASES = [  # family, feat_extract_norm, do_stable_layer_norm (pre-LN)
    ("wav2vec2", "group", False), ("wav2vec2", "layer", True), ("wav2vec2", "layer", False),
    ("hubert", "group", False), ("hubert", "layer", True),
    ("wavlm", "group", False), ("wavlm", "layer", True),
]


def hf_model(family: str, norm: str, stable: bool, pos_kernel: int = 16) -> torch.nn.Module:
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, conv_dim=CONV_DIMS, conv_kernel=KERNELS,
                  conv_stride=STRIDES, num_conv_pos_embeddings=pos_kernel,
                  num_conv_pos_embedding_groups=4, feat_extract_norm=norm,
                  do_stable_layer_norm=stable, conv_bias=stable)
    if family == "wavlm":
        kwargs.update(num_buckets=16, max_bucket_distance=32)
    config_cls, model_cls = HF_CLASSES[family]
    torch.manual_seed(0)
    model = model_cls(config_cls(**kwargs)).eval()
    perturb(model)
    return model


def hf_hidden_states(model: torch.nn.Module, wavs: torch.Tensor,
                     lengths: torch.Tensor | None) -> list[torch.Tensor]:
    mask = None
    if lengths is not None:
        mask = (torch.arange(wavs.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        return list(model(wavs, attention_mask=mask, output_hidden_states=True).hidden_states)


def run(model: UpstreamModel, wavs: torch.Tensor, lengths: torch.Tensor | None = None):
    with torch.no_grad():
        return model(wavs, lengths)


@pytest.mark.parametrize("family,norm,stable", HF_CASES)
def test_hugging_face_parity(tmp_path, family, norm, stable):
    reference = hf_model(family, norm, stable)
    reference.save_pretrained(tmp_path / "hf")
    model, config = load_upstream(str(tmp_path / "hf"))
    assert (config.family, config.extractor_mode, config.layer_norm_first) == (
        family, f"{norm}_norm", stable)
    assert not model.training
    wavs = padded_batch()
    full = run(model, wavs)
    assert_close(full.hidden_states, hf_hidden_states(reference, wavs, None))
    padded = run(model, wavs, LENGTHS)
    expected_frames = reference._get_feat_extract_output_lengths(LENGTHS)
    assert torch.equal(padded.lengths, expected_frames)
    assert_close(padded.hidden_states, hf_hidden_states(reference, wavs, LENGTHS),
                 padded.lengths)
    if config.extractor_mode == "layer_norm":
        # Nothing normalises over time, so padding leaves an utterance's frames unchanged.
        alone = run(model, wavs[2:, :LENGTHS[2]]).hidden_states
        assert_close([h[2:, :alone[0].shape[1]] for h in padded.hidden_states], alone)


def test_hugging_face_head_model_old_weight_norm_names_and_bin(tmp_path):
    """A ForCTC checkpoint (`wav2vec2.` prefix, lm_head ignored), an odd positional-conv
    kernel, weights in pytorch_model.bin with the pre-parametrization weight_g/weight_v."""
    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=CONV_DIMS, conv_kernel=KERNELS, conv_stride=STRIDES,
        num_conv_pos_embeddings=15, num_conv_pos_embedding_groups=4, vocab_size=12)
    reference = transformers.Wav2Vec2ForCTC(config).eval()
    perturb(reference)
    state = {}
    for key, value in reference.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        state[key] = value
    (tmp_path / "ctc").mkdir()
    torch.save(state, tmp_path / "ctc" / "pytorch_model.bin")
    config.to_json_file(tmp_path / "ctc" / "config.json")
    model, loaded = load_upstream(str(tmp_path / "ctc"))
    assert loaded.pos_conv_kernel == 15
    wavs = padded_batch()
    assert_close(run(model, wavs, LENGTHS).hidden_states,
                 hf_hidden_states(reference.wav2vec2, wavs, LENGTHS), model.frame_lengths(LENGTHS))


# --- torchaudio -------------------------------------------------------------------------------
def torchaudio_args(family: str, layer_norm_first: bool) -> dict:
    args = dict(
        extractor_mode="layer_norm" if layer_norm_first else "group_norm",
        extractor_conv_layer_config=[list(c) for c in zip(CONV_DIMS, KERNELS, STRIDES)],
        extractor_conv_bias=layer_norm_first, encoder_embed_dim=32,
        encoder_projection_dropout=0.1, encoder_pos_conv_kernel=15, encoder_pos_conv_groups=4,
        encoder_num_layers=2, encoder_num_heads=4, encoder_attention_dropout=0.1,
        encoder_ff_interm_features=48, encoder_ff_interm_dropout=0.1, encoder_dropout=0.1,
        encoder_layer_norm_first=layer_norm_first, encoder_layer_drop=0.1, aux_num_out=None)
    if family == "wavlm":
        args.update(encoder_num_buckets=16, encoder_max_distance=32)
    return args


def torchaudio_model(family: str, layer_norm_first: bool) -> torch.nn.Module:
    args = torchaudio_args(family, layer_norm_first)
    args["extractor_conv_layer_config"] = [tuple(c) for c in args["extractor_conv_layer_config"]]
    torch.manual_seed(0)
    build = torchaudio.models.wavlm_model if family == "wavlm" else torchaudio.models.wav2vec2_model
    model = build(**args).eval()
    perturb(model)
    return model


def torchaudio_hidden_states(model, wavs, lengths, wavlm: bool):
    """Drive torchaudio's own modules to collect the transformer input and every layer output.

    torchaudio's WavLM rejects lengths in `extract_features` (it asserts attention_mask is
    None), but its layers take a key padding mask, which is how they support padding.
    """
    with torch.no_grad():
        features, frames = model.feature_extractor(wavs, lengths)
        x, mask = model.encoder._preprocess(features, frames)
        transformer = model.encoder.transformer
        x = transformer._preprocess(x)
        key_padding = None if lengths is None else (
            torch.arange(x.shape[1])[None, :] >= frames[:, None])
        states, bias = [x], None
        for layer in transformer.layers:
            if wavlm:
                x, bias = layer(x, None, position_bias=bias, key_padding_mask=key_padding)
            else:
                x, bias = layer(x, mask, position_bias=bias)
            states.append(x)
        if not transformer.layer_norm_first:  # torchaudio's name for "post-LN" is inverted
            states[-1] = transformer.layer_norm(x)
        if lengths is None or not wavlm:  # the driver agrees with the public API
            layers, _ = model.extract_features(wavs, lengths)
            final, _ = model(wavs, lengths)
            for ours, public in zip(states[1:-1], layers[:-1]):
                assert torch.equal(ours, public)
            assert torch.equal(states[-1], final)
    return states, frames


@pytest.mark.parametrize("family,layer_norm_first", [
    ("wav2vec2", False), ("wav2vec2", True), ("hubert", False), ("hubert", True),
    ("wavlm", False), ("wavlm", True)])
def test_torchaudio_parity(tmp_path, family, layer_norm_first):
    reference = torchaudio_model(family, layer_norm_first)
    torch.save(reference.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps(torchaudio_args(family, layer_norm_first)))
    spec = f"torchaudio:{family}:{tmp_path / 'model.pt'}"
    model, config = load_upstream(spec)
    assert config.family == family and config.layer_norm_first == layer_norm_first
    wavs = padded_batch()
    wavlm = family == "wavlm"
    expected, _ = torchaudio_hidden_states(reference, wavs, None, wavlm)
    assert_close(run(model, wavs).hidden_states, expected)
    expected, frames = torchaudio_hidden_states(reference, wavs, LENGTHS, wavlm)
    padded = run(model, wavs, LENGTHS)
    assert torch.equal(padded.lengths, frames)
    assert_close(padded.hidden_states, expected, frames)


def test_torchaudio_base_config_inferred_from_shapes():
    """Without a sidecar JSON, a base-size state dict's architecture comes from its shapes."""
    from sprune.upstream.config import hubert_base, wavlm_large
    from sprune.upstream.torchaudio_format import infer_config

    for build, expected, family in ((torchaudio.models.hubert_base, hubert_base(), "hubert"),
                                    (torchaudio.models.wavlm_large, wavlm_large(), "wavlm")):
        with torch.device("meta"):
            state = build().state_dict()
        inferred = infer_config(state, family, "model.pt")
        for key in ("family", "extractor_mode", "conv_layers", "conv_bias", "embed_dim",
                    "num_heads", "layers", "layer_norm_first", "pos_conv_kernel",
                    "pos_conv_groups", "relative_position_buckets",
                    "relative_position_max_distance", "gated_relative_position",
                    "normalize_waveform"):
            assert getattr(inferred, key) == getattr(expected, key), key


# --- fairseq, through s3prl's copies of the fairseq models ------------------------------------
def fairseq_checkpoint(family: str, layer_norm_first: bool) -> tuple[dict, torch.nn.Module]:
    from s3prl.upstream.hubert import hubert_model
    from s3prl.upstream.wav2vec2 import wav2vec2_model
    from s3prl.upstream.wavlm import WavLM

    cfg = dict(extractor_mode="layer_norm" if layer_norm_first else "default",
               encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=48,
               encoder_attention_heads=4, conv_bias=layer_norm_first, conv_pos=16,
               conv_pos_groups=4, layer_norm_first=layer_norm_first,
               conv_feature_layers=str([tuple(c) for c in zip(CONV_DIMS, KERNELS, STRIDES)]))
    torch.manual_seed(0)
    if family == "wav2vec2":
        model_cfg = wav2vec2_model.Wav2Vec2Config(**cfg)
        model = wav2vec2_model.Wav2Vec2Model(model_cfg)
        checkpoint = {"task_cfg": {"normalize": False, "sample_rate": 16000},
                      "model_cfg": dataclasses.asdict(model_cfg)}
    elif family == "hubert":
        model_cfg = hubert_model.HubertConfig(label_rate=50, **cfg)
        task_cfg = hubert_model.HubertPretrainingConfig(label_rate=50)
        model = hubert_model.HubertModel(model_cfg, task_cfg, [list(range(10))])
        checkpoint = {"task_cfg": dataclasses.asdict(task_cfg),
                      "model_cfg": dataclasses.asdict(model_cfg),
                      "dictionaries_symbols": [list(range(10))]}
    else:  # the original unilm WavLM checkpoint layout: {"cfg": flat dict, "model": ...}
        cfg.update(relative_position_embedding=True, num_buckets=16, max_distance=32,
                   gru_rel_pos=True)
        model = WavLM.WavLM(WavLM.WavLMConfig(cfg))
        checkpoint = {"cfg": cfg}
    model.eval()
    perturb(model)
    checkpoint["model" if family == "wavlm" else "model_weight"] = model.state_dict()
    return checkpoint, model


def fairseq_hidden_states(model: torch.nn.Module, wavs: torch.Tensor) -> list[torch.Tensor]:
    """What s3prl's experts return: each layer's input and the encoder output."""
    states: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda m, inp: states.append(inp[0].transpose(0, 1)))
             for layer in model.encoder.layers]
    hooks.append(model.encoder.register_forward_hook(lambda m, inp, out: states.append(out[0])))
    with torch.no_grad():
        model.extract_features(wavs, None)
    for hook in hooks:
        hook.remove()
    return states


@pytest.mark.parametrize("family,layer_norm_first", [
    ("wav2vec2", False), ("wav2vec2", True), ("hubert", False), ("wavlm", False),
    ("wavlm", True)])
def test_fairseq_parity(tmp_path, family, layer_norm_first):
    checkpoint, reference = fairseq_checkpoint(family, layer_norm_first)
    torch.save(checkpoint, tmp_path / "model.pt")
    model, config = load_upstream(str(tmp_path / "model.pt"))
    assert config.family == family and config.layer_norm_first == layer_norm_first
    wavs = padded_batch()
    ours = run(model, wavs).hidden_states
    frames = ours[0].shape[1]  # fairseq pads to an even length; s3prl trims it back
    assert_close(ours, [h[:, :frames] for h in fairseq_hidden_states(reference, wavs)])


# --- sprune's own format and physical shrinking -----------------------------------------------
def test_sprune_format_round_trip(tmp_path):
    reference = hf_model("wavlm", "layer", True)
    reference.save_pretrained(tmp_path / "hf")
    model, config = load_upstream(str(tmp_path / "hf"))
    save_upstream(model, tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [
        "config.json", "model.safetensors"]
    again, again_config = load_upstream(str(tmp_path / "ours"))
    assert again_config == config
    wavs = padded_batch()
    for a, b in zip(run(model, wavs, LENGTHS).hidden_states,
                    run(again, wavs, LENGTHS).hidden_states):
        assert torch.equal(a, b)
    assert_close(run(again, wavs).hidden_states, hf_hidden_states(reference, wavs, None))


def some_selection(model: UpstreamModel, drop_conv: bool) -> Selection:
    """Drop a head, some head dims (unequal per head), FFN units, a whole FFN and a whole
    attention block; optionally conv channels of the inner conv layers."""
    selection = keep_everything(model.config)
    first, second = selection.layers
    first.heads = [0, 2, 3]
    first.qk_dims = [[0, 2, 5, 7], list(range(8)), [1]]
    first.vo_dims = [list(range(8)), [3, 4], []]
    first.ffn_units = list(range(0, 64, 3))
    second.heads, second.qk_dims, second.vo_dims = [], [], []
    second.ffn_units = []
    if drop_conv:
        channels = [c for c, _, _ in model.config.conv_layers]
        selection.conv_channels = [list(range(0, c, 2)) for c in channels[:-1]] + [
            list(range(channels[-1]))]
    return selection


def mask_like(model: UpstreamModel, selection: Selection) -> UpstreamModel:
    """A copy of `model` with everything `selection` drops zeroed (the masked model)."""
    import copy

    masked = copy.deepcopy(model)
    state = masked.state_dict()
    with torch.no_grad():
        for i, (layer, sel) in enumerate(zip(model.config.layers, selection.layers)):
            prefix = f"encoder.layers.{i}"
            qk_keep, vo_keep, offset_qk, offset_vo = [], [], 0, 0
            for head in range(layer.num_heads):
                if head in sel.heads:
                    pos = sel.heads.index(head)
                    qk_keep += [offset_qk + d for d in sel.qk_dims[pos]]
                    vo_keep += [offset_vo + d for d in sel.vo_dims[pos]]
                offset_qk += layer.qk_dims[head]
                offset_vo += layer.vo_dims[head]
            qk_drop = [r for r in range(offset_qk) if r not in qk_keep]
            vo_drop = [r for r in range(offset_vo) if r not in vo_keep]
            for proj in ("q_proj", "k_proj"):
                state[f"{prefix}.attention.{proj}.weight"][qk_drop] = 0
                state[f"{prefix}.attention.{proj}.bias"][qk_drop] = 0
            state[f"{prefix}.attention.out_proj.weight"][:, vo_drop] = 0
            if not sel.heads:
                state[f"{prefix}.attention.out_proj.bias"].zero_()
            units = [u for u in range(layer.ffn_dim) if u not in sel.ffn_units]
            state[f"{prefix}.feed_forward.output_dense.weight"][:, units] = 0
            if not sel.ffn_units:
                state[f"{prefix}.feed_forward.output_dense.bias"].zero_()
        if selection.conv_channels is not None:
            for i, kept in enumerate(selection.conv_channels[:-1]):
                dropped = [c for c in range(model.config.conv_layers[i][0]) if c not in kept]
                state[f"feature_extractor.conv_layers.{i + 1}.conv.weight"][:, dropped] = 0
    return masked


@pytest.mark.parametrize("family,layer_norm_first,drop_conv", [
    ("wav2vec2", False, True), ("wav2vec2", True, False), ("wavlm", False, True),
    ("wavlm", True, False)])
def test_shrunk_model_equals_masked_model(family, layer_norm_first, drop_conv):
    config = tiny_config(family, layer_norm_first=layer_norm_first,
                         extractor_mode="layer_norm" if layer_norm_first else "group_norm",
                         embed_dim=32, num_heads=4, ffn_dim=64)
    torch.manual_seed(0)
    model = UpstreamModel(config).eval()
    perturb(model)
    selection = some_selection(model, drop_conv)
    shrunk = shrink_upstream(model, selection)
    masked = mask_like(model, selection)
    layer0 = shrunk.config.layers[0]
    assert layer0.kept_heads == [0, 2, 3] and layer0.qk_dims == [4, 8, 1]
    assert layer0.vo_dims == [8, 2, 0] and shrunk.config.layers[1].ffn_dim == 0
    assert shrunk.encoder.layers[1].attention is None
    assert shrunk.num_parameters() < model.num_parameters()
    assert "layers.1.attention.q" not in shrunk.parameter_groups()
    wavs = padded_batch()
    assert_close(run(shrunk, wavs, LENGTHS).hidden_states,
                 run(masked, wavs, LENGTHS).hidden_states, shrunk.frame_lengths(LENGTHS))
    # The masking was not a no-op.
    change = run(model, wavs).hidden_states[-1] - run(masked, wavs).hidden_states[-1]
    assert change.abs().max() > 0.01


def test_sharded_hugging_face_checkpoint(tmp_path):
    reference = hf_model("hubert", "group", False)
    reference.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model, _ = load_upstream(f"hf:{tmp_path / 'hf'}")
    wavs = padded_batch()
    assert_close(run(model, wavs).hidden_states, hf_hidden_states(reference, wavs, None))
