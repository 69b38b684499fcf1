"""The architecture of one upstream model, with per-layer sizes, as a JSON-able dataclass.

One config describes wav2vec 2.0, HuBERT and WavLM, dense or physically shrunk. Shrinking
(structured pruning, paper 004) only changes sizes here, never the code:

* `conv_layers[i] = (channels, kernel, stride)`: conv channels may be pruned per layer.
* `layers[i].kept_heads`: which of the layer's ORIGINAL `num_heads` heads remain (WavLM's gate
  reads the layer input split into the original heads, so a layer must know which it kept).
* `layers[i].qk_dims[h]` / `vo_dims[h]`: query-key and value-output sizes of each kept head
  (paper 004 Eq. 3 prunes single dimensions, so heads of one layer may differ). Attention is
  always scaled by 1/sqrt(embed_dim / num_heads), the original head size, so a shrunk model
  computes exactly what the masked one did. No heads = attention removed.
* `layers[i].ffn_dim`: feed-forward intermediate size; 0 = feed-forward removed.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from sprune.config import from_dict
from sprune.errors import UserError
from sprune.io import atomic_write_text

FAMILIES = ("wav2vec2", "hubert", "wavlm")
EXTRACTOR_MODES = ("group_norm", "layer_norm")
STANDARD_CONV_LAYERS: list[tuple[int, int, int]] = (
    [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2)


@dataclass
class EncoderLayerConfig:
    """Sizes of one transformer layer (see the module docstring)."""

    kept_heads: list[int]
    qk_dims: list[int]
    vo_dims: list[int]
    ffn_dim: int

    @property
    def num_heads(self) -> int:
        return len(self.kept_heads)

    @property
    def has_attention(self) -> bool:
        return len(self.kept_heads) > 0

    @property
    def has_ffn(self) -> bool:
        return self.ffn_dim > 0


@dataclass
class UpstreamConfig:
    """Architecture and regularisation of a wav2vec2 / HuBERT / WavLM upstream.

    Dropout names follow Hugging Face: `feature_projection_dropout` after the projection,
    `hidden_dropout` after the positional conv, the attention block and the FFN,
    `attention_dropout` on attention probabilities, `activation_dropout` inside the FFN.
    """

    family: str
    extractor_mode: str
    conv_layers: list[tuple[int, int, int]]
    conv_bias: bool
    embed_dim: int
    num_heads: int
    layers: list[EncoderLayerConfig]
    layer_norm_first: bool
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    feature_projection_layer_norm: bool = True
    relative_position_buckets: int = 0
    relative_position_max_distance: int = 0
    gated_relative_position: bool = False
    layer_norm_eps: float = 1e-5
    normalize_waveform: bool = False
    feature_projection_dropout: float = 0.0
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layerdrop: float = 0.0

    def __post_init__(self) -> None:
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]
        self.layers = [layer if isinstance(layer, EncoderLayerConfig)
                       else EncoderLayerConfig(**layer) for layer in self.layers]

    # -- derived sizes ---------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def head_dim(self) -> int:
        """Size of one ORIGINAL head; sets the attention scaling and WavLM's gate input."""
        return self.embed_dim // self.num_heads

    @property
    def conv_channels(self) -> int:
        """Channels of the last conv layer (the feature projection's input size)."""
        return self.conv_layers[-1][0]

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame (400 for the standard extractor)."""
        field_size, jump = 1, 1
        for _, kernel, stride in self.conv_layers:
            field_size += (kernel - 1) * jump
            jump *= stride
        return field_size

    @property
    def downsample_rate(self) -> int:
        """Samples per output frame (320 for the standard extractor)."""
        rate = 1
        for _, _, stride in self.conv_layers:
            rate *= stride
        return rate

    @property
    def has_relative_position(self) -> bool:
        return self.relative_position_buckets > 0

    # -- checks and (de)serialisation ------------------------------------------------------
    def validate(self, where: str = "upstream config") -> "UpstreamConfig":
        """Raise `UserError` naming the first inconsistent key; return self."""
        def bad(key: str, problem: str) -> UserError:
            return UserError(f"{where}: '{key}' {problem}")

        if self.family not in FAMILIES:
            raise bad("family", f"is '{self.family}'; use one of {', '.join(FAMILIES)}")
        if self.extractor_mode not in EXTRACTOR_MODES:
            raise bad("extractor_mode", f"is '{self.extractor_mode}'; use one of "
                      f"{', '.join(EXTRACTOR_MODES)}")
        if not self.conv_layers:
            raise bad("conv_layers", "is empty; give at least one (channels, kernel, stride)")
        for i, layer in enumerate(self.conv_layers):
            if len(layer) != 3 or min(layer) < 1:
                raise bad(f"conv_layers[{i}]", f"is {list(layer)}; give three positive integers "
                          "(channels, kernel, stride)")
        if self.embed_dim < 1 or self.num_heads < 1 or self.embed_dim % self.num_heads:
            raise bad("num_heads", f"({self.num_heads}) must divide embed_dim ({self.embed_dim})")
        if self.pos_conv_kernel < 1 or self.pos_conv_groups < 1 \
                or self.embed_dim % self.pos_conv_groups:
            raise bad("pos_conv_groups", f"({self.pos_conv_groups}) must divide embed_dim "
                      f"({self.embed_dim}) and pos_conv_kernel must be positive")
        for i, layer in enumerate(self.layers):
            self._validate_layer(i, layer, bad)
        if self.relative_position_buckets < 0 or (
                self.has_relative_position and (
                    self.relative_position_buckets < 4 or self.relative_position_max_distance
                    <= self.relative_position_buckets // 4)):
            raise bad("relative_position_buckets", "must be 0 (none) or >= 4 with "
                      "relative_position_max_distance above a quarter of it")
        if self.gated_relative_position and not self.has_relative_position:
            raise bad("gated_relative_position", "needs relative_position_buckets > 0")
        for name in ("feature_projection_dropout", "hidden_dropout", "attention_dropout",
                     "activation_dropout", "layerdrop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise bad(name, f"is {getattr(self, name)}; use a probability in [0, 1)")
        if self.layer_norm_eps <= 0:
            raise bad("layer_norm_eps", "must be positive")
        return self

    def _validate_layer(self, i: int, layer: EncoderLayerConfig,
                        bad: Callable[[str, str], UserError]) -> None:
        key = f"layers[{i}]"
        heads = layer.kept_heads
        if len(set(heads)) != len(heads) or any(not 0 <= h < self.num_heads for h in heads):
            raise bad(f"{key}.kept_heads", f"is {heads}; give distinct head indices in "
                      f"[0, {self.num_heads})")
        for name in ("qk_dims", "vo_dims"):
            dims = getattr(layer, name)
            if len(dims) != len(heads):
                raise bad(f"{key}.{name}", f"has {len(dims)} entries for {len(heads)} kept "
                          "heads; give one per kept head")
            if any(not 0 <= d <= self.head_dim for d in dims):
                raise bad(f"{key}.{name}", f"is {dims}; each must be in [0, {self.head_dim}] "
                          "(the original head size)")
        if layer.ffn_dim < 0:
            raise bad(f"{key}.ffn_dim", f"is {layer.ffn_dim}; use 0 (removed) or more")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["conv_layers"] = [list(layer) for layer in self.conv_layers]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "upstream config") -> "UpstreamConfig":
        """Build and validate a config; unknown keys and wrong types are `UserError`s."""
        return from_dict(cls, dict(data), where).validate(where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "UpstreamConfig":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise UserError(f"upstream config {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object of config keys")
        return cls.from_dict(data, str(path))


def dense_layers(num_layers: int, num_heads: int, head_dim: int,
                 ffn_dim: int) -> list[EncoderLayerConfig]:
    """`num_layers` unpruned layers: every head kept at full size."""
    return [EncoderLayerConfig(kept_heads=list(range(num_heads)), qk_dims=[head_dim] * num_heads,
                               vo_dims=[head_dim] * num_heads, ffn_dim=ffn_dim)
            for _ in range(num_layers)]


def dense_config(family: str, *, extractor_mode: str, conv_bias: bool, embed_dim: int,
                 num_layers: int, num_heads: int, ffn_dim: int, layer_norm_first: bool,
                 conv_layers: list[tuple[int, int, int]] | None = None,
                 pos_conv_kernel: int = 128, pos_conv_groups: int = 16,
                 **extra: Any) -> UpstreamConfig:
    """An unpruned config; WavLM gets its gated relative position bias (320 buckets, 800)."""
    if family == "wavlm":
        extra.setdefault("relative_position_buckets", 320)
        extra.setdefault("relative_position_max_distance", 800)
        extra.setdefault("gated_relative_position", True)
    config = UpstreamConfig(
        family=family, extractor_mode=extractor_mode,
        conv_layers=list(conv_layers or STANDARD_CONV_LAYERS), conv_bias=conv_bias,
        embed_dim=embed_dim, num_heads=num_heads,
        layers=dense_layers(num_layers, num_heads, embed_dim // num_heads, ffn_dim),
        layer_norm_first=layer_norm_first, pos_conv_kernel=pos_conv_kernel,
        pos_conv_groups=pos_conv_groups, **extra)
    return config.validate()


# Published architectures. Dropouts are the pre-training values of torchaudio's builders.
def wav2vec2_base() -> UpstreamConfig:
    return dense_config("wav2vec2", extractor_mode="group_norm", conv_bias=False, embed_dim=768,
                        num_layers=12, num_heads=12, ffn_dim=3072, layer_norm_first=False,
                        feature_projection_dropout=0.1, hidden_dropout=0.1,
                        attention_dropout=0.1, activation_dropout=0.1, layerdrop=0.1)


def wav2vec2_large() -> UpstreamConfig:
    """The original LibriSpeech Large: group-norm extractor, post-LN."""
    return dense_config("wav2vec2", extractor_mode="group_norm", conv_bias=False,
                        embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096,
                        layer_norm_first=False, feature_projection_dropout=0.1,
                        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
                        layerdrop=0.1)


def wav2vec2_large_lv60k() -> UpstreamConfig:
    """Large LV-60k: layer-norm extractor with conv bias, pre-LN (layer_norm_first)."""
    return dense_config("wav2vec2", extractor_mode="layer_norm", conv_bias=True,
                        embed_dim=1024, num_layers=24, num_heads=16, ffn_dim=4096,
                        layer_norm_first=True, normalize_waveform=True,
                        feature_projection_dropout=0.1, activation_dropout=0.1, layerdrop=0.1)


def wav2vec2_xlsr53() -> UpstreamConfig:
    """XLSR-53: the Large LV-60k architecture trained on 53 languages."""
    return wav2vec2_large_lv60k()


def hubert_base() -> UpstreamConfig:
    return dense_config("hubert", extractor_mode="group_norm", conv_bias=False, embed_dim=768,
                        num_layers=12, num_heads=12, ffn_dim=3072, layer_norm_first=False,
                        feature_projection_dropout=0.1, hidden_dropout=0.1,
                        attention_dropout=0.1, layerdrop=0.05)


def hubert_large() -> UpstreamConfig:
    return dense_config("hubert", extractor_mode="layer_norm", conv_bias=False, embed_dim=1024,
                        num_layers=24, num_heads=16, ffn_dim=4096, layer_norm_first=True,
                        normalize_waveform=True)


def wavlm_base() -> UpstreamConfig:
    return dense_config("wavlm", extractor_mode="group_norm", conv_bias=False, embed_dim=768,
                        num_layers=12, num_heads=12, ffn_dim=3072, layer_norm_first=False,
                        feature_projection_dropout=0.1, hidden_dropout=0.1,
                        attention_dropout=0.1, activation_dropout=0.1, layerdrop=0.1)


def wavlm_base_plus() -> UpstreamConfig:
    """WavLM Base+: the Base architecture trained on 94k hours."""
    return wavlm_base()


def wavlm_large() -> UpstreamConfig:
    return dense_config("wavlm", extractor_mode="layer_norm", conv_bias=False, embed_dim=1024,
                        num_layers=24, num_heads=16, ffn_dim=4096, layer_norm_first=True,
                        normalize_waveform=True, feature_projection_dropout=0.1,
                        hidden_dropout=0.1, attention_dropout=0.1, layerdrop=0.1)


def tiny_config(family: str = "wav2vec2", *, extractor_mode: str = "group_norm",
                layer_norm_first: bool = False, conv_channels: int = 32, embed_dim: int = 32,
                num_layers: int = 2, num_heads: int = 4, ffn_dim: int = 64,
                conv_bias: bool = False, pos_conv_kernel: int = 16, pos_conv_groups: int = 4,
                **extra: Any) -> UpstreamConfig:
    """A small model of the real architecture for tests: the standard 7-layer extractor
    shape (400-sample receptive field, 320-sample hop) with few channels and dims."""
    if family == "wavlm":
        extra.setdefault("relative_position_buckets", 16)
        extra.setdefault("relative_position_max_distance", 32)
    conv = [(conv_channels, kernel, stride) for _, kernel, stride in STANDARD_CONV_LAYERS]
    return dense_config(family, extractor_mode=extractor_mode, conv_bias=conv_bias,
                        embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads,
                        ffn_dim=ffn_dim, layer_norm_first=layer_norm_first, conv_layers=conv,
                        pos_conv_kernel=pos_conv_kernel, pos_conv_groups=pos_conv_groups,
                        **extra)


PRESETS: dict[str, Callable[[], UpstreamConfig]] = {
    "wav2vec2_base": wav2vec2_base,
    "wav2vec2_large": wav2vec2_large,
    "wav2vec2_large_lv60k": wav2vec2_large_lv60k,
    "wav2vec2_xlsr53": wav2vec2_xlsr53,
    "hubert_base": hubert_base,
    "hubert_large": hubert_large,
    "wavlm_base": wavlm_base,
    "wavlm_base_plus": wavlm_base_plus,
    "wavlm_large": wavlm_large,
}


def preset_config(name: str) -> UpstreamConfig:
    """The config of a published architecture by name (see `PRESETS`)."""
    if name not in PRESETS:
        raise UserError(f"unknown upstream architecture '{name}'; known: {', '.join(PRESETS)}")
    return PRESETS[name]()
