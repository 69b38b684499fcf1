"""The architecture of a sprune Transformer LM, as it is saved beside its weights.

The dense layout follows ESPnet's `espnet2.lm.transformer_lm.TransformerLM`, so that LMs move
between the two without loss (`sprune lm import / export`): token embedding (`embed_dim`) ->
Linear + LayerNorm + ReLU to `d_model` -> optional sinusoidal positions (x * sqrt(d_model) + PE)
-> `layers` pre-LN blocks (causal self-attention, ReLU feed-forward) -> LayerNorm -> Linear to
the vocabulary. ESPnet's LayerNorms use eps 1e-12 except the input layer's (1e-5).

Pruned models that have been physically shrunk keep the same class and differ only in the
per-layer sizes below (as in DPHuBERT, masked and shrunk models come from one code path):

    layer_heads[i]   heads kept in block i (0: the block has no attention sublayer)
    layer_ffn[i]     feed-forward units kept in block i (0: no feed-forward sublayer)
    ranks[name]      a factorized Linear (`layers.3.ffn.up`, ...) of that rank: U [out, r] V [r, in]
                     (rank 0: every rank component pruned, the layer outputs its bias)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sprune.errors import UserError

# The Linear layers of one block, by their module path inside `layers.{i}`.
BLOCK_LINEARS = ("attention.q", "attention.k", "attention.v", "attention.out", "ffn.up",
                 "ffn.down")


@dataclass
class LMConfig:
    """Architecture of a Transformer LM (the `model:` section of conf/lm/*.yaml)."""

    vocab_size: int = 0              # filled from the BPE model when 0
    embed_dim: int = 128             # ESPnet embed_unit
    d_model: int = 256               # ESPnet att_unit
    heads: int = 4                   # ESPnet head; head size = d_model / heads
    ffn_dim: int = 1024              # ESPnet unit
    layers: int = 4                  # ESPnet layer
    pos_enc: Literal["sinusoidal", "none"] = "sinusoidal"
    dropout: float = 0.1             # input, residual, feed-forward and positional dropout
    attention_dropout: float = 0.1
    norm_eps: float = 1e-12          # ESPnet's LayerNorm of the blocks and the final norm
    input_norm_eps: float = 1e-5     # torch's default, ESPnet's input-layer LayerNorm
    layer_heads: list[int] | None = None
    layer_ffn: list[int] | None = None
    ranks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("embed_dim", "d_model", "heads", "ffn_dim", "layers"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"model.{key}: {value!r} must be a whole number >= 1")
        if self.d_model % self.heads:
            raise UserError(f"model.d_model {self.d_model} is not a multiple of model.heads "
                            f"{self.heads}; pick sizes whose head size d_model / heads is whole")
        for key, full in (("layer_heads", self.heads), ("layer_ffn", self.ffn_dim)):
            sizes = getattr(self, key)
            if sizes is None:
                continue
            if len(sizes) != self.layers or any(not 0 <= s <= full for s in sizes):
                raise UserError(f"model.{key}: {sizes} needs {self.layers} sizes in [0, {full}]")
        for name, rank in self.ranks.items():
            layer, _, linear = name.partition(".")
            index = name.split(".")[1] if name.startswith("layers.") else ""
            if (layer != "layers" or not index.isdigit() or int(index) >= self.layers
                    or name.split(".", 2)[2] not in BLOCK_LINEARS or rank < 0):
                raise UserError(f"model.ranks: '{name}: {rank}' is not a Linear of a block "
                                f"(layers.<i>.{{{','.join(BLOCK_LINEARS)}}}) with rank >= 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    def heads_of(self, layer: int) -> int:
        return self.heads if self.layer_heads is None else self.layer_heads[layer]

    def ffn_of(self, layer: int) -> int:
        return self.ffn_dim if self.layer_ffn is None else self.layer_ffn[layer]

    @property
    def is_uniform(self) -> bool:
        """Every block has all its heads and units and no Linear is factorized (the layout
        ESPnet's TransformerLM can hold)."""
        return (all(self.heads_of(i) == self.heads for i in range(self.layers))
                and all(self.ffn_of(i) == self.ffn_dim for i in range(self.layers))
                and not self.ranks)
