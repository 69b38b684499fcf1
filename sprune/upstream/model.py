"""The one pruning-aware upstream: wav2vec 2.0, HuBERT and WavLM from one `UpstreamConfig`.

    model = UpstreamModel(config)
    out = model(wavs, lengths)          # wavs [B, T] float at 16 kHz, lengths [B] or None
    out.hidden_states                   # L + 1 tensors [B, T', D]: transformer input, layers
    out.lengths                         # [B] valid frames

`hidden_states[0]` is the transformer input (feature projection + positional conv, and the
LayerNorm in post-LN models), `hidden_states[i]` the output of layer i; in pre-LN models the
last one is after the encoder's final LayerNorm. This is Hugging Face's `hidden_states` and
what s3prl's experts return. Padding follows the references: frames past a sequence's valid
length are zeroed before the positional conv and never attended to; their values are
meaningless. Note that group-norm extractors normalise over the whole padded waveform, as in
the references, so padding changes a group-norm model's output slightly.

Parameter names are stable (they key masks and checkpoints); `parameter_groups()` names the
prunable weight matrices by component. Only weight matrices and conv kernels have two or more
dimensions; scales (`pos_conv.weight_g`, WavLM's `gate.const`), biases and norms are 1-D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sprune.errors import UserError
from sprune.hostsync import host_read, in_host_memory
from sprune.upstream.config import UpstreamConfig
from sprune.upstream.encoder import Encoder
from sprune.upstream.feature_cache import FeatureCache
from sprune.upstream.feature_extractor import ConvFeatureExtractor, FeatureProjection

WAVEFORM_NORM_EPS = 1e-5  # F.layer_norm's default, as fairseq and s3prl normalise waveforms


@dataclass
class UpstreamOutput:
    """hidden_states: L + 1 tensors [B, T', D]; lengths: [B] valid frames per sequence."""

    hidden_states: list[Tensor]
    lengths: Tensor

    @property
    def last_hidden_state(self) -> Tensor:
        return self.hidden_states[-1]


class UpstreamModel(nn.Module):
    """wav2vec2 / HuBERT / WavLM encoder built from an `UpstreamConfig` (see module doc)."""

    def __init__(self, config: UpstreamConfig, freeze_feature_encoder: bool = False) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.feature_extractor = ConvFeatureExtractor(config.conv_layers, config.extractor_mode,
                                                      config.conv_bias)
        self.feature_projection = FeatureProjection(
            config.conv_channels, config.embed_dim, config.feature_projection_layer_norm,
            config.layer_norm_eps, config.feature_projection_dropout)
        self.encoder = Encoder(config)
        self._frozen_extractor = False
        self._frozen_front_end = False
        self._time_masking: tuple[float, int] | None = None
        self._feature_cache: FeatureCache | None = None
        self.reset_parameters()
        self.freeze_feature_encoder(freeze_feature_encoder)

    # -- training switches -----------------------------------------------------------------
    def freeze_feature_encoder(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the conv feature encoder: no gradients, always in eval mode."""
        self._frozen_extractor = frozen
        for param in self.feature_extractor.parameters():
            param.requires_grad_(not frozen)
        self.train(self.training)

    def front_end_modules(self) -> list[nn.Module]:
        """What lies between the conv encoder and the first transformer layer: the feature
        projection, the positional conv and, in post-LN models, the LayerNorm before the
        layers (in pre-LN models the encoder's LayerNorm acts after the layers)."""
        modules: list[nn.Module] = [self.feature_projection, self.encoder.pos_conv]
        if not self.config.layer_norm_first:
            modules.append(self.encoder.layer_norm)
        return modules

    def freeze_front_end(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) `front_end_modules()`: no gradients, always in eval mode, so
        fine-tuning trains the transformer layers alone (with the conv encoder frozen too,
        nothing below the first layer needs a backward pass)."""
        self._frozen_front_end = frozen
        for module in self.front_end_modules():
            for param in module.parameters():
                param.requires_grad_(not frozen)
        self.train(self.training)

    def set_time_masking(self, prob: float, span: int) -> None:
        """While training, zero random spans of the projected features before the
        transformer (SpecAugment-style time masking, as wav2vec 2.0 fine-tuning does with its
        mask embedding; zeros keep the parameter set unchanged): each valid frame starts a
        span of `span` frames with probability `prob` (`sprune.ssl.masking.span_mask`).
        prob 0 turns it off. Evaluation (eval mode) never masks."""
        self._time_masking = (prob, span) if prob > 0 else None

    def set_feature_cache(self, cache: FeatureCache | None) -> None:
        """Take what the frozen part computes from `cache` (`sprune.upstream.feature_cache`:
        each utterance encoded once, alone, and shared by every run): the conv encoder's
        output while it is frozen, the layers' input while the front end is frozen too (and
        no time masking acts); None computes it at every forward again. A trainable encoder
        ignores the cache."""
        self._feature_cache = cache

    @property
    def feature_encoder_frozen(self) -> bool:
        return self._frozen_extractor

    def train(self, mode: bool = True) -> "UpstreamModel":
        super().train(mode)
        if self._frozen_extractor:
            self.feature_extractor.eval()
        if self._frozen_front_end:
            for module in self.front_end_modules():
                module.eval()
        return self

    # -- forward ---------------------------------------------------------------------------
    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames for `lengths` valid samples: [B] -> [B]."""
        return self.feature_extractor.output_lengths(lengths)

    def _check_audio(self, wavs: Tensor, lengths: Tensor | None) -> None:
        if wavs.dim() != 2:
            raise ValueError(f"wavs must be [batch, samples], got shape {tuple(wavs.shape)}")
        if lengths is not None and (lengths.dim() != 1 or lengths.shape[0] != wavs.shape[0]):
            raise ValueError(f"lengths must be [batch] = [{wavs.shape[0]}], "
                             f"got shape {tuple(lengths.shape)}")
        if lengths is None:
            shortest = wavs.shape[1]
        elif in_host_memory(lengths):
            with host_read():
                shortest, longest = int(lengths.min()), int(lengths.max())
            if longest > wavs.shape[1]:
                raise ValueError(f"a length ({longest}) exceeds the padded audio "
                                 f"({wavs.shape[1]} samples)")
        else:
            # Lengths on an accelerator are not read: that would stall it at every forward
            # (see sprune.hostsync). The batch was checked where it was made: AudioDataset
            # refuses audio shorter than the receptive field, collate pads to the longest.
            return
        field_size = self.config.receptive_field
        if shortest < field_size:
            raise UserError(
                f"audio of {shortest} samples is shorter than the upstream's receptive field "
                f"({field_size} samples, {1000 * field_size / 16000:g} ms at 16 kHz); drop or "
                "pad utterances that short")

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> UpstreamOutput:
        """wavs: [B, T] float at 16 kHz (zero-padded); lengths: [B] valid samples or None."""
        self._check_audio(wavs, lengths)
        batch, samples = wavs.shape
        if self.config.normalize_waveform:
            wavs = normalize_waveforms(wavs, lengths)
        cache = self._feature_cache if self._frozen_extractor else None
        # the layers' input itself is cached when nothing before the layers trains or masks
        cache_front = (cache is not None and self._frozen_front_end
                       and not (self._time_masking is not None and self.training))
        if cache_front:   # `features` is then the layers' input [B, T', D]
            features = cache.features(self._layer_input_alone, wavs, lengths, self.frame_lengths,
                                      [self.feature_extractor, *self.front_end_modules()],
                                      kind="layer_input")
        elif cache is not None:
            features = cache.features(self.feature_extractor, wavs, lengths, self.frame_lengths,
                                      [self.feature_extractor], kind="conv_features")
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self._frozen_extractor):
                features = self.feature_extractor(wavs)
        frames = features.shape[1]
        padding = None
        if lengths is None:  # no padding, and no host sync (CUDA graphs can capture this)
            frame_lengths = torch.full((batch,), frames, dtype=torch.long, device=wavs.device)
        else:
            # Whether any sequence is padded is read where the lengths are in host memory
            # (free); on an accelerator reading it would stall the device at every forward,
            # so the padding mask is always built there (all False when nothing is padded).
            frame_lengths = self.frame_lengths(lengths.long())
            padded = True
            if in_host_memory(frame_lengths):
                with host_read():
                    padded = int(frame_lengths.min()) < frames
            frame_lengths = frame_lengths.to(wavs.device, non_blocking=True)
            if padded:
                padding = (torch.arange(frames, device=wavs.device)[None, :]
                           >= frame_lengths[:, None])
        if cache_front:
            hidden_states = self.encoder.run_layers(features, padding)
            return UpstreamOutput(hidden_states=hidden_states, lengths=frame_lengths)
        projected = self.feature_projection(features)
        if self._time_masking is not None and self.training:
            from sprune.ssl.masking import span_mask

            masked = span_mask(frame_lengths, frames, *self._time_masking)
            projected = projected.masked_fill(masked.unsqueeze(-1), 0.0)
        hidden_states = self.encoder(projected, padding)
        return UpstreamOutput(hidden_states=hidden_states, lengths=frame_lengths)

    def _layer_input_alone(self, wav: Tensor) -> Tensor:
        """The transformer layers' input (before dropout) for one unpadded utterance:
        [1, T] -> [1, T', D]; what the feature cache keeps when the front end is frozen."""
        return self.encoder.embed(self.feature_projection(self.feature_extractor(wav)))

    # -- structure ---------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[str]]:
        """Group name -> names of the prunable weight tensors (no biases, no norms).

        `conv_extractor`, `feature_projection`, `pos_conv`, per layer
        `layers.{i}.attention.{q,k,v,out}` and `layers.{i}.ffn.{in,out}` (absent when the
        block is removed), `transformer` (all of those layer groups) and `all`.
        """
        groups: dict[str, list[str]] = {
            "conv_extractor": [f"feature_extractor.conv_layers.{i}.conv.weight"
                               for i in range(len(self.feature_extractor.conv_layers))],
            "feature_projection": ["feature_projection.projection.weight"],
            "pos_conv": ["encoder.pos_conv.weight_v"],
        }
        transformer: list[str] = []
        for i, layer in enumerate(self.encoder.layers):
            prefix = f"encoder.layers.{i}"
            if layer.attention is not None:
                for part in ("q", "k", "v", "out"):
                    groups[f"layers.{i}.attention.{part}"] = [
                        f"{prefix}.attention.{part}_proj.weight"]
            if layer.feed_forward is not None:
                groups[f"layers.{i}.ffn.in"] = [f"{prefix}.feed_forward.intermediate_dense.weight"]
                groups[f"layers.{i}.ffn.out"] = [f"{prefix}.feed_forward.output_dense.weight"]
            transformer += [name for key, names in groups.items()
                            if key.startswith(f"layers.{i}.") for name in names]
        groups["transformer"] = transformer
        groups["all"] = (groups["conv_extractor"] + groups["feature_projection"]
                         + groups["pos_conv"] + transformer)
        return groups

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- initialisation --------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """fairseq's initialisation: Kaiming-normal conv kernels, N(0, 0.02) linear and
        embedding weights, zero biases, unit norms; the positional conv ~ N(0, 4 / (K * D))
        with weight_g = ||weight_v||."""
        for block in self.feature_extractor.conv_layers:
            nn.init.kaiming_normal_(block.conv.weight)
            if block.conv.bias is not None:
                nn.init.zeros_(block.conv.bias)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, 0.02)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        pos_conv = self.encoder.pos_conv
        kernel = pos_conv.weight_v.shape[-1]
        pos_conv.weight_v.normal_(0.0, math.sqrt(4.0 / (kernel * self.config.embed_dim)))
        pos_conv.weight_g.copy_(torch.linalg.vector_norm(pos_conv.weight_v, dim=(0, 1)))
        pos_conv.bias.zero_()
        for layer in self.encoder.layers:
            if layer.attention is not None and layer.attention.gate is not None:
                nn.init.ones_(layer.attention.gate.const)


def normalize_waveforms(wavs: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Zero mean, unit variance per utterance over its valid samples; padding stays 0.

    wavs: [B, T]; lengths: [B] or None. Matches fairseq / s3prl (`F.layer_norm(wav)`).
    """
    if lengths is None:
        return F.layer_norm(wavs, wavs.shape[-1:], eps=WAVEFORM_NORM_EPS)
    valid = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lengths[:, None]
    count = lengths.to(wavs.dtype).unsqueeze(1)
    mean = (wavs * valid).sum(1, keepdim=True) / count
    var = (((wavs - mean) * valid) ** 2).sum(1, keepdim=True) / count
    return ((wavs - mean) / torch.sqrt(var + WAVEFORM_NORM_EPS)) * valid
