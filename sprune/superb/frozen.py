"""Frozen-upstream downstream tasks in the SUPERB manner, small enough for the offline recipe.

The upstream runs once over every utterance (eval mode, no gradients) and its hidden states
are kept; the heads then train on those features only, so the upstream is frozen by
construction. As in SUPERB, each head reads a learned weighted sum of all hidden states
(softmax-normalised weights over the L + 1 layers, `WeightedLayerSum`):

    intent   weighted sum -> mean over valid frames -> linear -> cross-entropy (accuracy)
    ctc      weighted sum -> linear -> GELU -> 2 x (conv1d, kernel 5, GELU) -> linear -> CTC
             over characters (greedy decoding; WER and CER). SUPERB's ASR head is a
             2-layer BiLSTM of 1024 units; a small convolutional head keeps the offline
             recipe within minutes on CPU (a 128-unit BiLSTM was 8x slower per epoch).

Each head is trained from the same seed for a fixed number of epochs; the epoch with the
best dev metric is kept and scored on test. Same features give the same numbers: this is
how the recipe checks that a masked upstream and its shrunk copy are interchangeable. Their
float32 hidden states differ by ~1e-6 (other summation orders), which training a head for
many epochs can amplify into other error rates, so features are extracted with the upstream
in float64 by default and then stored in float32: a masked and a shrunk upstream then give
the same float32 features, and the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sprune.data.dataset import AudioDataset, collate_audio
from sprune.data.tokenizer import BLANK_ID, Tokenizer
from sprune.tasks.ctc import Decoded, error_rates
from sprune.tasks.ctc_decode import greedy_decode_batch
from sprune.tasks.intent import masked_mean

# upstream(wavs [B, T], lengths [B]) -> object with hidden_states (L + 1 x [B, T', D]), lengths
UpstreamFn = Callable[[Tensor, Tensor], Any]


@dataclass
class Features:
    """Hidden states of one split: per utterance [L + 1, T', D] (valid frames only)."""

    utts: list[str]
    frames: list[Tensor]
    texts: list[str | None]
    intents: list[str | None]
    langs: list[str | None]

    def pooled(self) -> Tensor:
        """Mean over frames of every layer: [N, L + 1, D]."""
        return torch.stack([f.mean(dim=1) for f in self.frames])


@torch.no_grad()
def extract_features(upstream: UpstreamFn, dataset: AudioDataset, batch_size: int = 8
                     ) -> Features:
    """Run the (eval-mode) upstream over `dataset`, batching utterances of similar length.
    The wavs take the upstream's dtype; the features are kept in float32. Under torchrun
    each process runs its share of the batches and every process gets all the features
    (the heads then train alike on every process; rank 0 writes)."""
    from sprune.training import distributed

    dtype = next(upstream.parameters()).dtype  # type: ignore[attr-defined]
    found: dict[int, Tensor] = {}
    for indices in distributed.my_share(dataset.length_sorted_batches(batch_size)):
        batch = collate_audio([dataset[i] for i in indices])
        out = upstream(batch["wavs"].to(dtype), batch["lengths"])
        stacked = torch.stack(list(out.hidden_states), dim=1).float()   # [B, L + 1, T', D]
        for row, index in enumerate(indices):
            found[index] = stacked[row, :, :int(out.lengths[row])].cpu().clone()
    frames = distributed.merge_indexed(found, len(dataset))
    data = dataset.data
    utts = list(dataset.utts)
    return Features(utts=utts, frames=frames,
                    texts=[data.text.get(u) if data.text else None for u in utts],
                    intents=[data.utt2intent.get(u) if data.utt2intent else None for u in utts],
                    langs=[data.utt2lang.get(u) if data.utt2lang else None for u in utts])


def max_difference(a: Features, b: Features) -> float:
    """Largest |a - b| over every hidden state of every utterance (same utterances)."""
    if a.utts != b.utts:
        raise ValueError("features of different utterances")
    return max(float((x - y).abs().max()) if x.shape == y.shape else float("inf")
               for x, y in zip(a.frames, b.frames))


class WeightedLayerSum(nn.Module):
    """SUPERB's featurizer: sum_l softmax(w)_l h_l. h: [..., L + 1, D] -> [..., D]."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, hidden: Tensor) -> Tensor:
        return (hidden * self.weights.softmax(0)[:, None]).sum(dim=-2)


# --- intent classification --------------------------------------------------------------------
@dataclass
class HeadConfig:
    epochs: int = 100
    lr: float = 1e-2       # Adam
    batch_size: int = 16
    hidden: int = 128      # ctc: projection and convolution channels
    seed: int = 0


INTENT_HEAD = HeadConfig(epochs=100, lr=1e-2, batch_size=16)
CTC_HEAD = HeadConfig(epochs=25, lr=3e-3, batch_size=8)   # tuned on the dense tiny upstream


def train_intent(train: Features, dev: Features, test: Features, config: HeadConfig
                 ) -> dict[str, Any]:
    """Weighted sum of mean-pooled layers -> linear; accuracy of the best-dev epoch."""
    intents = sorted({i for i in train.intents if i is not None})
    index = {name: k for k, name in enumerate(intents)}

    def labels(features: Features) -> Tensor:
        return torch.tensor([index.get(i, -1) for i in features.intents])

    x = {name: f.pooled() for name, f in (("train", train), ("dev", dev), ("test", test))}
    y = {"train": labels(train), "dev": labels(dev), "test": labels(test)}
    mean, std = x["train"].mean(0), x["train"].std(0).clamp(min=1e-5)
    x = {name: (v - mean) / std for name, v in x.items()}
    torch.manual_seed(config.seed)
    layers, dim = x["train"].shape[1:]
    model = nn.Sequential(WeightedLayerSum(layers), nn.Linear(dim, len(intents)))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)

    def accuracy(split: str) -> float:
        with torch.no_grad():
            return float((model(x[split]).argmax(-1) == y[split]).float().mean())

    best: dict[str, Any] = {"dev": -1.0}
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(y["train"]), generator=generator)
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            loss = F.cross_entropy(model(x["train"][rows]), y["train"][rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        dev_acc = accuracy("dev")
        if dev_acc > best["dev"]:
            best = {"epoch": epoch, "dev": dev_acc, "test": accuracy("test"),
                    "layer_weights": model[0].weights.softmax(0).tolist()}
    return {"intent_dev_acc": best["dev"], "intent_test_acc": best["test"],
            "intent_epoch": best["epoch"], "intent_layer_weights": best["layer_weights"],
            "num_intents": len(intents)}


# --- CTC ASR ----------------------------------------------------------------------------------
class CTCHead(nn.Module):
    """[B, T, L + 1, D] -> log-probabilities [B, T, V] (see the module docstring).

    Padded frames are zeroed before each convolution, so a frame's output depends only on
    valid frames (the same output whatever the batch's padding)."""

    def __init__(self, num_layers: int, dim: int, vocab_size: int, hidden: int,
                 kernel: int = 5) -> None:
        super().__init__()
        self.featurizer = WeightedLayerSum(num_layers)
        self.project = nn.Linear(dim, hidden)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)
                                   for _ in range(2))
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, hidden: Tensor, lengths: Tensor) -> Tensor:
        valid = (torch.arange(hidden.shape[1])[None, :] < lengths[:, None])[:, None, :]
        x = F.gelu(self.project(self.featurizer(hidden))).transpose(1, 2)   # [B, H, T]
        for conv in self.convs:
            x = F.gelu(conv(x * valid))
        return self.out(x.transpose(1, 2)).log_softmax(-1)


def _pad(frames: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Utterances [L + 1, T_i, D] -> [B, T_max, L + 1, D] and lengths [B]."""
    lengths = torch.tensor([f.shape[1] for f in frames])
    padded = frames[0].new_zeros(len(frames), int(lengths.max()), *frames[0].shape[::2])
    for row, f in enumerate(frames):
        padded[row, :f.shape[1]] = f.transpose(0, 1)
    return padded, lengths


def _normalizer(train: Features) -> tuple[Tensor, Tensor]:
    """Per-layer, per-dim mean and std of the training frames: [L + 1, 1, D] each
    (running float64 sums: no copy of all frames at once)."""
    count = sum(f.shape[1] for f in train.frames)
    total = sum(f.double().sum(1, keepdim=True) for f in train.frames)
    squares = sum(f.double().pow(2).sum(1, keepdim=True) for f in train.frames)
    mean = total / count
    var = (squares - count * mean.pow(2)) / max(count - 1, 1)
    return mean.float(), var.clamp(min=0).sqrt().float().clamp(min=1e-5)


def _decode(model: CTCHead, features: Features, tokenizer: Tokenizer, norm: tuple[Tensor, Tensor],
            batch_size: int) -> list[Decoded]:
    decoded = []
    with torch.no_grad():
        for start in range(0, len(features.utts), batch_size):
            frames = [(f - norm[0]) / norm[1] for f in features.frames[start:start + batch_size]]
            padded, lengths = _pad(frames)
            labels = greedy_decode_batch(model(padded, lengths), lengths)
            for k, ids in enumerate(labels):
                i = start + k
                decoded.append(Decoded(features.utts[i], features.langs[i],
                                       tokenizer.normalize(features.texts[i] or ""),
                                       tokenizer.decode(ids)))
    return decoded


def train_ctc(train: Features, dev: Features, test: Features, tokenizer: Tokenizer,
              config: HeadConfig) -> dict[str, Any]:
    """Train the CTC head; WER / CER (fractions) on test at the epoch with the best dev CER."""
    norm = _normalizer(train)
    targets = [torch.tensor(tokenizer.encode(t or "")) for t in train.texts]
    torch.manual_seed(config.seed)
    layers, _, dim = train.frames[0].shape
    model = CTCHead(layers, dim, tokenizer.vocab_size, config.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    best: dict[str, Any] = {"dev_cer": float("inf")}
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train.utts), generator=generator).tolist()
        for start in range(0, len(order), config.batch_size):
            rows = order[start:start + config.batch_size]
            padded, lengths = _pad([(train.frames[i] - norm[0]) / norm[1] for i in rows])
            labels = [targets[i] for i in rows]
            label_lengths = torch.tensor([len(t) for t in labels])
            log_probs = model(padded, lengths)
            loss = F.ctc_loss(log_probs.transpose(0, 1), torch.cat(labels), lengths,
                              label_lengths, blank=BLANK_ID, reduction="sum",
                              zero_infinity=True) / label_lengths.sum()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        model.eval()
        dev_rates = error_rates(_decode(model, dev, tokenizer, norm, config.batch_size), tokenizer)
        if dev_rates["cer"] < best["dev_cer"]:
            test_rates = error_rates(_decode(model, test, tokenizer, norm, config.batch_size),
                                     tokenizer)
            best = {"dev_cer": dev_rates["cer"], "dev_wer": dev_rates["wer"], "epoch": epoch,
                    "test_cer": test_rates["cer"], "test_wer": test_rates["wer"],
                    "layer_weights": model.featurizer.weights.softmax(0).tolist()}
    return {"ctc_dev_cer": best["dev_cer"], "ctc_dev_wer": best["dev_wer"],
            "ctc_test_cer": best["test_cer"], "ctc_test_wer": best["test_wer"],
            "ctc_epoch": best["epoch"], "ctc_layer_weights": best["layer_weights"]}
