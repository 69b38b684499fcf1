"""Transducer (RNN-T) speech recognition on a sprune upstream, with ESPnet's own prediction and
joint networks (paper 002's ASR model family; the pathways of paper 003 train on it too).

    upstream hidden state [B, T, D] --(stack k frames, dropout)--> encoder output [B, T/k, kD]
    labels [B, U] --ESPnet TransducerDecoder (embedding + LSTM/GRU)--> [B, U + 1, H]
    ESPnet JointNetwork(enc [B, T, 1, D], dec [B, 1, U + 1, H]) -> logits [B, T, U + 1, V]
    loss: torchaudio.functional.rnnt_loss (blank 0)

The classes are `espnet2.asr.decoder.transducer_decoder.TransducerDecoder` and
`espnet2.asr_transducer.joint_network.JointNetwork`, built the way `espnet2.tasks.asr` builds
them (decoder `embed_pad=0`, joint output = vocabulary), so ESPnet's `BeamSearchTransducer`
decodes a sprune transducer unchanged (`sprune.decode.espnet_reference`).

Units are the BPE ids of `sprune.lm.vocab.LMVocab` (`<blank>` 0, `<unk>` 1, pieces,
`<sos/eos>` last), the ids of the LM fused in decoding: the joint has one output per LM token.
`<sos/eos>` is never a target (ESPnet keeps it in the transducer's token list the same way).

Loss normalisation: the summed RNN-T loss divided by the number of target labels in the
batch, as the CTC task does (every label weighs the same whatever the batch); ESPnet averages
per utterance instead. The conv feature encoder is frozen by the upstream, not here.

Auxiliary CTC (`ctc_weight` w > 0): loss = RNN-T + w x CTC of a linear head on the encoder
output, both per target label, as ESPnet's transducer models add `ctc_weight` x CTC (the
head only helps training; decoding does not use it). `zero_infinity` is on for it: an
utterance too short for CTC's repeats still trains the transducer.

Frame stacking (`stack_frames` k): k consecutive upstream frames are concatenated into one
encoder frame (the last one zero-padded), the usual low-frame-rate transducer input (e.g.
40 ms frames at k = 2 for a 20 ms upstream). The joint tensor [B, T, U + 1, V] and the RNN-T
loss, which dominate a training step of a small upstream, shrink k-fold.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sprune.decode import SEARCH_BATCH
from sprune.errors import UserError
from sprune.training import distributed, param_groups


def import_espnet(module: str) -> Any:
    """Import an ESPnet module without the line espnet's attention module prints on stdout
    when the optional flash_attn package is missing (it would open every log) and without
    the nltk downloads some of its modules try (`sprune.offline`)."""
    import contextlib
    import io

    from sprune.offline import import_offline

    with contextlib.redirect_stdout(io.StringIO()):
        return import_offline(module)


@dataclass
class TransducerConfig:
    """The `transducer:` section of a transducer recipe's YAML."""

    bpe: str | None = None           # the LM's BPE model (`sprune lm bpe`), shared with the
                                     # LM fused in decoding; default: trained on the transcripts
    vocab_size: int = 256            # only without `bpe`: ids in all (<blank>, <unk>, <sos/eos>)
    layer: int = -1                  # hidden state of the upstream fed to the joint network
    stack_frames: int = 1            # encoder frames concatenated into one (2: 50 -> 25 Hz)
    dropout: float = 0.1             # on the encoder output
    rnn_type: Literal["lstm", "gru"] = "lstm"      # ESPnet TransducerDecoder
    decoder_layers: int = 1
    decoder_dim: int = 256
    decoder_dropout: float = 0.1
    decoder_embed_dropout: float = 0.1
    joint_dim: int = 256             # ESPnet JointNetwork joint_space_size
    joint_activation: str = "tanh"
    ctc_weight: float = 0.0          # + this x a CTC loss of a linear head on the encoder
    head_lr_scale: float = 1.0       # decoder + joint learn at the schedule's rate x this
    beam: int = 1                    # dev decoding during training: 1 = greedy

    def __post_init__(self) -> None:
        if not self.head_lr_scale > 0:
            raise UserError(f"transducer.head_lr_scale: {self.head_lr_scale} must be positive")
        if self.beam < 1:
            raise UserError(f"transducer.beam: {self.beam} must be at least 1")
        if self.ctc_weight < 0:
            raise UserError(f"transducer.ctc_weight: {self.ctc_weight} must be at least 0")
        for key in ("stack_frames", "decoder_layers", "decoder_dim", "joint_dim"):
            if getattr(self, key) < 1:
                raise UserError(f"transducer.{key}: {getattr(self, key)} must be at least 1")


class TransducerModel(nn.Module):
    """forward(batch with wavs [B, S], lengths [B], targets [B, U], target_lengths [B])
    -> {"loss"}. `encode` gives what the searches of `sprune.decode` read."""

    def __init__(self, upstream: nn.Module, embed_dim: int, vocab_size: int,
                 config: TransducerConfig) -> None:
        super().__init__()
        TransducerDecoder = import_espnet("espnet2.asr.decoder.transducer_decoder").TransducerDecoder
        JointNetwork = import_espnet("espnet2.asr_transducer.joint_network").JointNetwork
        self.upstream = upstream
        self.layer = config.layer
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = TransducerDecoder(
            vocab_size, rnn_type=config.rnn_type, num_layers=config.decoder_layers,
            hidden_size=config.decoder_dim, dropout=config.decoder_dropout,
            dropout_embed=config.decoder_embed_dropout, embed_pad=0)
        self.stack_frames = config.stack_frames
        self.joint = JointNetwork(vocab_size, embed_dim * config.stack_frames, config.decoder_dim,
                                  joint_space_size=config.joint_dim,
                                  joint_activation_type=config.joint_activation)
        self.ctc_weight = config.ctc_weight
        self.ctc_head = (nn.Linear(embed_dim * config.stack_frames, vocab_size)
                         if config.ctc_weight > 0 else None)
        self.head_lr_scale = config.head_lr_scale
        self.vocab_size = vocab_size

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The upstream's AdamW groups at the scheduled learning rate, the decoder's and the
        joint network's at `head_lr_scale` times it."""
        groups = param_groups(self.upstream, weight_decay)
        for module in (self.decoder, self.joint, self.ctc_head):
            if module is None:
                continue
            groups += [{**g, "lr_scale": self.head_lr_scale} for g in param_groups(module, weight_decay)]
        return [group for group in groups if group["params"]]

    def encode(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """wavs [B, S], lengths [B] -> encoder output [B, T / k, k D] and valid frames [B]."""
        out = self.upstream(wavs, lengths)
        hidden, frames = out.hidden_states[self.layer], out.lengths
        k = self.stack_frames
        if k > 1:
            batch, time, dim = hidden.shape
            hidden = torch.nn.functional.pad(hidden, (0, 0, 0, -time % k))
            hidden = hidden.reshape(batch, -1, k * dim)
            frames = torch.div(frames + k - 1, k, rounding_mode="floor")
        return self.dropout(hidden), frames

    def logits(self, enc: Tensor, targets: Tensor) -> Tensor:
        """enc [B, T, D], targets [B, U] (padded with blank) -> joint logits [B, T, U + 1, V]."""
        self.decoder.set_device(enc.device)
        blank = targets.new_zeros(targets.shape[0], 1)
        dec = self.decoder(torch.cat([blank, targets], dim=1))       # [B, U + 1, H]
        return self.joint(enc.unsqueeze(2), dec.unsqueeze(1))

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        enc, frames = self.encode(batch["wavs"], batch["lengths"])
        targets, target_lengths = batch["targets"], batch["target_lengths"]
        logits = self.logits(enc, targets)
        labels = target_lengths.sum().clamp(min=1)
        rnnt = rnnt_loss_sum(logits, targets, frames, target_lengths) / labels
        if self.ctc_head is None:
            return {"loss": rnnt, "loss_weight": labels}
        log_probs = self.ctc_head(enc).float().log_softmax(-1)
        ctc = F.ctc_loss(log_probs.transpose(0, 1), targets, frames.long(), target_lengths,
                         blank=0, reduction="sum", zero_infinity=True) / labels
        return {"loss": rnnt + self.ctc_weight * ctc, "rnnt_loss": rnnt.detach(),
                "ctc_loss": ctc.detach(), "loss_weight": labels}


def rnnt_loss_sum(logits: Tensor, targets: Tensor, frames: Tensor, target_lengths: Tensor
                  ) -> Tensor:
    """Summed RNN-T loss (blank 0) of logits [B, T, U + 1, V] for targets [B, U] with valid
    frames [B] and labels [B], computed in float32.

    The forward-backward recursion reads two log-probs per lattice node: blank, and the next
    target label. So the log-softmax runs here and torchaudio's `rnnt_loss` gets those two
    ([B, T, U + 1, 2], the target as label 1, `fused_log_softmax=False`): the same loss and
    gradients as handing it the full logits, about 5x faster on the CPU at V = 500 (measured
    with T = 121, U = 35: 0.17 s vs 0.78-0.96 s for loss + backward)."""
    from torchaudio.functional import rnnt_loss

    log_probs = logits.float().log_softmax(dim=-1)
    batch, time, nodes, _ = log_probs.shape
    next_label = torch.cat([targets.long(), targets.new_zeros(batch, 1).long()], dim=1)
    target_log_probs = log_probs.gather(
        -1, next_label[:, None, :nodes, None].expand(batch, time, nodes, 1))[..., 0]
    pair = torch.stack([log_probs[..., 0], target_log_probs], dim=-1)
    with warnings.catch_warnings():   # torchaudio 2.9 announces the function's move
        warnings.simplefilter("ignore")
        return rnnt_loss(pair, torch.ones_like(targets, dtype=torch.int32), frames.int(),
                         target_lengths.int(), blank=0, reduction="sum",
                         fused_log_softmax=False)


@dataclass
class EncodedBatch:
    """Encoder outputs of some utterances of a dataset: `indices` into it, enc [B, T, D],
    frames [B], and their ids, languages and transcripts."""

    indices: list[int]
    enc: Tensor
    frames: Tensor
    utts: list[str]
    langs: list[str | None]
    texts: list[str]


class EncodedSet:
    """A dataset's encoder outputs in length-sorted batches, computed once and kept while they
    fit in `budget_bytes` (a weight grid then searches them again without the encoder), else
    computed afresh at every pass. `seconds`: the encoder's time in its latest pass;
    `audio_seconds`: the audio it encoded in that pass."""

    def __init__(self, model: TransducerModel, dataset, batch_size: int = 8,
                 device: torch.device | str | None = None, budget_bytes: int = 2 << 30) -> None:
        from sprune.tasks.ctc import check_decodable

        check_decodable(dataset, "transducer")
        self.model, self.dataset, self.batch_size = model, dataset, batch_size
        self.device = device or next(model.parameters()).device
        self.budget = budget_bytes
        self.cache: list[EncodedBatch] | None = None
        self.seconds = self.audio_seconds = 0.0

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.no_grad()
    def _encode(self) -> Iterator[EncodedBatch]:
        import time

        from sprune.data.audio import SAMPLE_RATE
        from sprune.data.dataset import collate_audio

        was_training = self.model.training
        self.model.eval()
        try:
            for indices in distributed.my_share(
                    self.dataset.length_sorted_batches(self.batch_size)):
                batch = collate_audio([self.dataset[i] for i in indices])
                start = time.perf_counter()
                enc, frames = self.model.encode(batch["wavs"].to(self.device),
                                                batch["lengths"].to(self.device))
                self.seconds += time.perf_counter() - start
                self.audio_seconds += float(batch["lengths"].sum()) / SAMPLE_RATE
                yield EncodedBatch(indices, enc, frames, batch["utt"],
                                   batch.get("lang") or [None] * len(indices), batch["text"])
        finally:
            self.model.train(was_training)

    def __iter__(self) -> Iterator[EncodedBatch]:
        if self.cache is not None:
            yield from self.cache
            return
        kept: list[EncodedBatch] | None = []
        size = 0
        self.seconds = self.audio_seconds = 0.0
        for item in self._encode():
            size += item.enc.numel() * item.enc.element_size()
            if kept is not None and size <= self.budget:
                kept.append(item)
            else:
                kept = None
            yield item
        self.cache = kept


def search_encoded(encoded: EncodedSet, vocab, search, search_batch: int = SEARCH_BATCH) -> list:
    """Run `search` over every batch of `encoded` -> `sprune.tasks.ctc.Decoded` items in
    dataset order; `vocab` (`LMVocab`) turns ids into text. `search_batch` > 0 searches
    consecutive encoder batches together, up to that many utterances (the batches are length
    sorted, so little padding is added): a batched search costs per frame of its longest
    utterance, nearly whatever the number of utterances, so fewer, larger searches are
    faster (on the KJV transducer at beam 4, 50 test utterances: 64 at once search in about
    half the time of batches of 8); 0 searches each encoder batch as it is. In a distributed
    run each process searches its share (`EncodedSet` encodes only that) and every process
    gets the whole list."""
    from sprune.tasks.ctc import Decoded

    out: dict[int, Decoded] = {}
    with torch.no_grad():
        for item in regroup(encoded, search_batch):
            results = search(item.enc, item.frames)
            for i, utt, lang, text, result in zip(item.indices, item.utts, item.langs,
                                                  item.texts, results):
                out[i] = Decoded(utt, lang, vocab.normalize(text), vocab.decode(result.tokens))
    return distributed.merge_indexed(out, len(encoded))


def regroup(batches: Iterable[EncodedBatch], size: int) -> Iterator[EncodedBatch]:
    """Consecutive `batches` joined into batches of at most `size` utterances (a batch larger
    than `size` stays whole; `size` 0: unchanged). enc is zero-padded to the longest."""
    group: list[EncodedBatch] = []
    for item in batches:
        if group and (size <= 0 or sum(len(g.indices) for g in group) + len(item.indices) > size):
            yield _joined(group)
            group = []
        group.append(item)
    if group:
        yield _joined(group)


def _joined(group: list[EncodedBatch]) -> EncodedBatch:
    if len(group) == 1:
        return group[0]
    frames = max(g.enc.shape[1] for g in group)
    enc = torch.cat([F.pad(g.enc, (0, 0, 0, frames - g.enc.shape[1])) for g in group])
    return EncodedBatch([i for g in group for i in g.indices], enc,
                        torch.cat([g.frames for g in group]),
                        [u for g in group for u in g.utts], [x for g in group for x in g.langs],
                        [t for g in group for t in g.texts])


def decode_transducer(model: TransducerModel, dataset, vocab, search,
                      batch_size: int = 8, device: torch.device | str | None = None) -> list:
    """Decode every utterance of `dataset` (with transcripts) with `search` (a
    `sprune.decode` search over `model.decoder` / `model.joint`), in dataset order ->
    `sprune.tasks.ctc.Decoded` items."""
    return search_encoded(EncodedSet(model, dataset, batch_size, device, budget_bytes=0),
                          vocab, search)
