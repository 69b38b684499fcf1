"""Sentences as LM training examples, their padded batches, and evaluation batches.

Each sentence becomes `<sos> w_1 .. w_n <eos>` (`<sos>` and `<eos>` are the same last id,
as in ESPnet); the LM predicts tokens[1:] from tokens[:-1], so a sentence of n BPE tokens
contributes n + 1 predictions (its words and the end of sentence) to the perplexity.

A sentence longer than `max_len` tokens (with `<sos>` and `<eos>`) is cut into windows of
at most `max_len` tokens that overlap by one token: window j holds tokens
[j (max_len - 1), j (max_len - 1) + max_len) of the sentence, so each token is predicted in
exactly one window (the first token of a window is only context) and the prediction count,
the perplexity denominator, is the same as without cutting; only a window's first
predictions see less left context. Continuation windows therefore do not start with
`<sos>`, and only the last one ends with `<eos>`.
"""
from __future__ import annotations

from array import array
from typing import Sequence

import torch
from tqdm import tqdm

from sprune.lm.vocab import LMVocab

PAD_ID = 0  # <blank>: positions at or after `lengths` are ignored by the LM


class SentenceDataset(torch.utils.data.Dataset):
    """`lines` encoded with `vocab`: item i is a LongTensor [L_i] `<sos> .. <eos>` (or a
    window of a long sentence, see the module docstring).

    Lines that are empty after normalisation are skipped (`empty_lines` counts them);
    `unk_count` is the number of `<unk>` tokens (sentencepiece turns each run of characters
    the BPE model never saw into one), for the OOV rate `unk_count / num_tokens()`.
    `sentences` counts the sentences (fewer than `len` when long ones were cut).
    """

    def __init__(self, lines: Sequence[str], vocab: LMVocab, max_len: int | None = None,
                 progress: bool = False, chunk: int = 10000) -> None:
        if max_len is not None and max_len < 2:
            raise ValueError(f"max_len {max_len} < 2: an example needs a token to predict")
        self.vocab, self.max_len = vocab, max_len
        sos_eos = vocab.sos_eos
        # One flat int32 buffer plus offsets: millions of sentences as Python lists or
        # separate tensors would take several times the memory.
        tokens, offsets = array("i"), array("q", [0])
        self.sentences = self.empty_lines = self.unk_count = 0
        bar = tqdm(total=len(lines), desc="encoding", unit=" lines", disable=not progress,
                   mininterval=1.0, delay=2.0)
        for start in range(0, len(lines), chunk):
            for ids in vocab.encode_batch(lines[start:start + chunk]):
                if not ids:
                    self.empty_lines += 1
                    continue
                self.sentences += 1
                self.unk_count += ids.count(vocab.unk)
                seq = [sos_eos, *ids, sos_eos]
                if max_len is None or len(seq) <= max_len:
                    tokens.extend(seq)
                    offsets.append(len(tokens))
                    continue
                stride = max_len - 1
                for begin in range(0, len(seq) - 1, stride):
                    tokens.extend(seq[begin:begin + max_len])
                    offsets.append(len(tokens))
            bar.update(min(chunk, len(lines) - start))
        bar.close()
        self._tokens = torch.frombuffer(tokens, dtype=torch.int32) if tokens else \
            torch.zeros(0, dtype=torch.int32)
        self._offsets = torch.frombuffer(offsets, dtype=torch.int64)
        self._buffers = (tokens, offsets)  # frombuffer shares memory: keep the arrays alive
        self._lengths = (self._offsets[1:] - self._offsets[:-1]).tolist()

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, index: int) -> torch.Tensor:
        """LongTensor [L] of example `index`."""
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        return self._tokens[start:end].long()

    def lengths(self) -> list[int]:
        """Tokens per example, `<sos>` and `<eos>` included (for length bucketing)."""
        return self._lengths

    def num_tokens(self) -> int:
        """Predicted tokens in all: sum of (length - 1), the perplexity denominator."""
        return len(self._tokens) - len(self._lengths)


def collate_sentences(items: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Examples [L_i] -> {"tokens": LongTensor [B, T_max] padded with 0 (`<blank>`),
    "lengths": LongTensor [B] (L_i, `<sos>` .. `<eos>` inclusive)}."""
    lengths = torch.tensor([len(item) for item in items], dtype=torch.long)
    tokens = torch.full((len(items), int(lengths.max()) if len(items) else 0), PAD_ID,
                        dtype=torch.long)
    for row, item in enumerate(items):
        tokens[row, :len(item)] = item
    return {"tokens": tokens, "lengths": lengths}


def batches(dataset: SentenceDataset, batch_size: int) -> list[list[int]]:
    """Example indices in batches of `batch_size`, longest examples first (ties by index):
    little padding, and a batch that does not fit in memory fails at the start."""
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} < 1")
    lengths = dataset.lengths()
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
