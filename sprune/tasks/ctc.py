"""CTC speech recognition (paper 001): upstream -> dropout -> linear -> log-softmax -> CTC.

As in wav2vec 2.0 fine-tuning, one linear layer on a hidden state (default: the last layer's
output) predicts the output units (characters, phones or BPE pieces; see
`sprune.data.tokenizer`), label 0 being the CTC blank. The conv feature encoder is frozen by
the upstream (`freeze_feature_encoder`), not here.

Loss: torch's CTC loss summed over the batch and divided by the number of target labels in
the batch (fairseq's wav2vec 2.0 fine-tuning criterion with `sentence_avg: false`): every
label weighs the same whatever the batch composition. `zero_infinity` stays off; instead an
utterance with fewer frames than its transcript needs (labels + one blank between each pair
of equal consecutive labels) is a `UserError` naming it, instead of an infinite loss.

Metrics are fractions: WER and CER for char/BPE units, PER (and WER over phone words when
there are word boundaries) for phones; overall and per language ("wer/<lang>").
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sprune import metrics
from sprune.data.dataset import AudioDataset, collate_audio
from sprune.data.tokenizer import BLANK_ID, PhoneTokenizer, Tokenizer
from sprune.errors import UserError
from sprune.tasks.ctc_decode import CTCTaskDecoder
from sprune.training import param_groups


def required_frames(targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Fewest frames a CTC alignment of each target needs: its length plus its repeats.

    targets [B, L] (padded), target_lengths [B] -> [B].
    """
    if targets.shape[1] < 2:
        return target_lengths.clone()
    repeat = targets[:, 1:] == targets[:, :-1]
    position = torch.arange(1, targets.shape[1], device=targets.device)
    repeat &= position[None, :] < target_lengths[:, None]
    return target_lengths + repeat.sum(1)


def check_ctc_lengths(frames: Tensor, targets: Tensor, target_lengths: Tensor,
                      utts: Sequence[str] | None = None) -> None:
    """Raise a `UserError` naming the first utterance whose audio is too short for its
    transcript. frames [B] valid output frames; targets [B, L]; target_lengths [B]."""
    need = required_frames(targets, target_lengths)
    short = (frames.to(need.device) < need).nonzero().flatten().tolist()
    if not short:
        return
    b = short[0]
    name = f"utterance '{utts[b]}'" if utts is not None else f"batch item {b}"
    more = f" ({len(short) - 1} more in this batch)" if len(short) > 1 else ""
    raise UserError(f"{name}: audio too short for its transcript under CTC: {int(frames[b])} "
                    f"frames but its {int(target_lengths[b])} labels need {int(need[b])} "
                    f"(a blank between repeated labels){more}; drop it from the data dir "
                    "(`sprune data subset --utt-list`) or use coarser units")


@dataclass
class CTCConfig:
    """The `ctc:` section of a CTC recipe's YAML: output units, head and decoding."""

    units: Literal["char", "phone", "bpe"] = "char"
    vocab_size: int = 100            # bpe: sentencepiece pieces (blank and <unk> included)
    word_boundary: bool = True       # phone: '|' between words (gives WER over phone words)
    tokenizer: str | None = None     # an existing tokenizer file (e.g. a joint multilingual
                                     # vocabulary); default: built from the training text
    layer: int = -1                  # hidden state the linear head reads (-1: last layer)
    dropout: float = 0.1
    head_lr_scale: float = 1.0       # the fresh head's learning rate = the schedule's x this
                                     # (the pretrained upstream follows the schedule itself)
    # SpecAugment-style time masking while training (wav2vec 2.0 fine-tuning's regulariser):
    # spans of `time_mask_span` frames of the projected features, each frame starting one
    # with probability `time_mask_prob` (0: off), are set to zero; see sprune.ssl.masking
    time_mask_prob: float = 0.0
    time_mask_span: int = 10
    # decoding of training-time and `sprune evaluate` runs: greedy, or beam (torchaudio's
    # flashlight CTC decoder, lexicon-free; `sprune decode` adds lexicons and word LMs)
    decoder: Literal["greedy", "beam"] = "greedy"
    beam: int = 8
    beam_prune: float | None = None  # beam: try only labels with probability >= this
    beam_tokens: int | None = None   # beam: try only this many most likely units per frame
                                     # (None: all; 8 lost nothing on mini_mls dev, 5x faster)
    kenlm: str | None = None         # beam: a unit n-gram (ARPA / KenLM binary over these
                                     # units, `sprune lm arpa --units RUN`) fused with
    lm_weight: float = 0.0           # this weight (tune it on dev: `sprune decode --tune-on cer`)

    def primary_metric(self) -> str:
        """The error rate that ranks models of these units: PER for phones, else WER."""
        return "per" if self.units == "phone" else "wer"

    def metrics(self) -> tuple[str, ...]:
        """Overall metric names `error_rates` reports for these units."""
        if self.units == "phone":
            return ("per", "wer") if self.word_boundary else ("per",)
        return ("wer", "cer")


class CTCCollate:
    """`collate_audio` plus the encoded transcripts:

    targets          [B, L_max] int64 label ids, padded with 0
    target_lengths   [B]        int64
    source: how to name where a transcript comes from in errors (e.g. 'data/train/text').
    """

    def __init__(self, tokenizer: Tokenizer, source: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.source = source

    def _where(self, utt: str) -> str:
        return f"{self.source} ({utt})" if self.source else f"utterance '{utt}'"

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        labels = []
        for item in items:
            where = self._where(item.get("utt", "?"))
            if item.get("text") is None:
                raise UserError(f"{where} has no transcript; speech recognition needs a "
                                "`text` file in the data dir")
            ids = self.tokenizer.encode(item["text"], where=where)
            if not ids:
                raise UserError(f"{where}: the transcript is empty after normalisation; CTC "
                                "needs at least one unit per utterance: fix or remove it")
            labels.append(ids)
        batch = collate_audio(items)
        lengths = torch.tensor([len(ids) for ids in labels], dtype=torch.long)
        targets = torch.full((len(labels), int(lengths.max())), BLANK_ID, dtype=torch.long)
        for row, ids in enumerate(labels):
            targets[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        batch["targets"], batch["target_lengths"] = targets, lengths
        return batch


class CTCModel(nn.Module):
    """forward(batch with wavs [B, T], lengths [B], targets [B, L], target_lengths [B]) -> {"loss"}.

    `upstream(wavs, lengths)` must return an object with `hidden_states` (list of [B, T', D])
    and `lengths` [B] (frames), as `sprune.upstream` models do.
    """

    def __init__(self, upstream: nn.Module, embed_dim: int, vocab_size: int, layer: int = -1,
                 dropout: float = 0.1, head_lr_scale: float = 1.0,
                 time_mask_prob: float = 0.0, time_mask_span: int = 10) -> None:
        super().__init__()
        if not head_lr_scale > 0:
            raise UserError(f"ctc.head_lr_scale: {head_lr_scale} must be positive")
        if not 0.0 <= time_mask_prob < 1.0 or time_mask_span < 1:
            raise UserError(f"ctc.time_mask_prob {time_mask_prob} must be in [0, 1) and "
                            f"ctc.time_mask_span {time_mask_span} at least 1")
        if time_mask_prob > 0:
            upstream.set_time_masking(time_mask_prob, time_mask_span)
        self.upstream = upstream
        self.layer = layer
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, vocab_size)
        self.head_lr_scale = head_lr_scale

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The Trainer's AdamW groups: the upstream's at the scheduled learning rate, the
        linear head's at `head_lr_scale` times it."""
        groups = param_groups(self.upstream, weight_decay)
        for group in param_groups(self.head, weight_decay):
            groups.append({**group, "lr_scale": self.head_lr_scale})
        return [group for group in groups if group["params"]]

    def log_probs(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame log-probabilities [B, T', V] (float32) and valid frames [B]."""
        out = self.upstream(wavs, lengths)
        logits = self.head(self.dropout(out.hidden_states[self.layer]))
        return logits.float().log_softmax(-1), out.lengths

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        log_probs, frames = self.log_probs(batch["wavs"], batch["lengths"])
        targets, target_lengths = batch["targets"], batch["target_lengths"]
        check_ctc_lengths(frames, targets, target_lengths, batch.get("utt"))
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, frames.long(), target_lengths,
                          blank=BLANK_ID, reduction="sum", zero_infinity=False)
        labels = target_lengths.sum().clamp(min=1)
        return {"loss": loss / labels, "loss_weight": labels}


@dataclass(frozen=True)
class Decoded:
    """One decoded utterance: normalised reference and hypothesis text."""

    utt: str
    lang: str | None
    ref: str
    hyp: str


def check_decodable(dataset: AudioDataset, task: str) -> None:
    """A dataset to decode and score needs utterances and transcripts (else a `UserError`
    naming the data dir)."""
    where = getattr(getattr(dataset, "data", None), "path", None) or "the data dir"
    if len(dataset) == 0:
        raise UserError(f"nothing to decode: {where} has no utterances (an empty decoding set)")
    if getattr(dataset, "data", None) is not None and dataset.data.text is None:
        raise UserError(f"{where} has no `text` file; {task} evaluation needs transcripts")


@torch.no_grad()
def ctc_log_probs(model: CTCModel, dataset: AudioDataset, batch_size: int = 8,
                  device: torch.device | str | None = None
                  ) -> Iterator[tuple[list[int], dict[str, Any], Tensor, Tensor]]:
    """Run the model over `dataset` (which needs transcripts) in batches of similar length:
    yields (dataset indices, the collated batch, log-probs [B, T, V] on the CPU, valid frames
    [B]). In a distributed run each process gets its share of the batches."""
    from sprune.training import distributed

    check_decodable(dataset, "CTC")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for indices in distributed.my_share(dataset.length_sorted_batches(batch_size)):
            batch = collate_audio([dataset[i] for i in indices])
            log_probs, frames = model.log_probs(batch["wavs"].to(device), batch["lengths"].to(device))
            yield indices, batch, log_probs.cpu(), frames.cpu()
    finally:
        model.train(was_training)


def decode_dataset(model: CTCModel, dataset: AudioDataset, tokenizer: Tokenizer,
                   decoder: Literal["greedy", "beam"] = "greedy", beam: int = 8,
                   prune: float | None = None, batch_size: int = 8,
                   device: torch.device | str | None = None, kenlm: str | None = None,
                   lm_weight: float = 0.0, beam_tokens: int | None = None) -> list[Decoded]:
    """Decode every utterance of `dataset` (which needs transcripts), in dataset order, with
    `sprune.tasks.ctc_decode.CTCTaskDecoder`. In a distributed run each process decodes its
    share of the batches and every process gets the whole list."""
    from sprune.training import distributed

    search = CTCTaskDecoder(tokenizer, decoder, beam, prune, kenlm=kenlm, lm_weight=lm_weight,
                            beam_tokens=beam_tokens)
    # batches of similar length waste little compute on padding; the output keeps dataset order
    out: dict[int, Decoded] = {}
    for indices, batch, log_probs, frames in ctc_log_probs(model, dataset, batch_size, device):
        hyps = search(log_probs, frames)
        langs = batch.get("lang") or [None] * len(hyps)
        for i, utt, lang, text, hyp in zip(indices, batch["utt"], langs, batch["text"], hyps):
            out[i] = Decoded(utt, lang, tokenizer.normalize(text), hyp)
    return distributed.merge_indexed(out, len(dataset))


def error_rates(decoded: Sequence[Decoded], tokenizer: Tokenizer) -> dict[str, float]:
    """WER and CER (PER for phones) overall and per language, as fractions."""
    if not decoded:
        raise UserError("cannot score an empty decoding set; check the data dir being decoded")
    groups: dict[str, list[Decoded]] = defaultdict(list)
    for d in decoded:
        groups[""].append(d)
        if d.lang is not None:
            groups[f"/{d.lang}"].append(d)
    phones = isinstance(tokenizer, PhoneTokenizer)
    result: dict[str, float] = {}
    for suffix, items in sorted(groups.items()):
        refs, hyps = [d.ref for d in items], [d.hyp for d in items]
        if not phones or tokenizer.word_boundary:
            result[f"wer{suffix}"] = metrics.wer(refs, hyps)
        if phones:
            result[f"per{suffix}"] = metrics.per([tokenizer.phones(r) for r in refs],
                                                 [tokenizer.phones(h) for h in hyps])
        else:
            result[f"cer{suffix}"] = metrics.cer(refs, hyps)
    return dict(sorted(result.items()))


def evaluate_ctc(model: CTCModel, dataset: AudioDataset, tokenizer: Tokenizer,
                 decoder: Literal["greedy", "beam"] = "greedy", beam: int = 8,
                 prune: float | None = None, batch_size: int = 8,
                 device: torch.device | str | None = None, kenlm: str | None = None,
                 lm_weight: float = 0.0, beam_tokens: int | None = None) -> dict[str, float]:
    """Decode `dataset` and score it: {"wer", "cer" | "per", "wer/<lang>", ...} (fractions)."""
    decoded = decode_dataset(model, dataset, tokenizer, decoder, beam, prune, batch_size, device,
                             kenlm, lm_weight, beam_tokens)
    return error_rates(decoded, tokenizer)
